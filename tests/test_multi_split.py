"""Multi-split (`algorithm.skpo.num_splits` = K, ours; docs/algorithm.md, "Multi-split"): the pure
rules, the start-up refusals, the estimator on hand-built K = 2 batches, the trackers and the
driver's batch sizing. Every number below is worked out by hand in the comments.
"""

import math

import numpy as np
import pytest
import torch
from test_agent_loop_lengths import PAPER, config_with
from v1_trainer import v1_trainer

from skpo_verl.config import SKPOConfig
from skpo_verl.core.advantages import upstream_advantages_by_stage, upstream_advantages_rms
from skpo_verl.core.split import next_stage_runs
from skpo_verl.core.tracker import tracker_to_reward
from skpo_verl.rollout.lengths import SKPOLengthError, check_lengths
from skpo_verl.rows import SKPORows
from skpo_verl.training.estimator import compute_skpo_advantage
from skpo_verl.training.state import SKPOState
from skpo_verl.verl_config import compose_ppo_config

R2 = 2**-0.5


# --- core: when the next stage runs, per-stage normalisation ------------------------------------------------------


def test_the_next_stage_runs_only_while_the_kept_prefix_leaves_room_and_no_segment_ended():
    # |s_1| = 8, t_2 = 11: 19 < 20 runs; t_2 = 12: 20 is the whole response budget, so it does not.
    assert next_stage_runs([8], 11, 20, last_ended=False)
    assert not next_stage_runs([8], 12, 20, last_ended=False)
    # Stage 3 counts both kept segments: 5 + 6 + 8 = 19 < 20; 5 + 6 + 9 = 20 does not fit.
    assert next_stage_runs([5, 6], 8, 20, last_ended=False)
    assert not next_stage_runs([5, 6], 9, 20, last_ended=False)
    # A kept candidate that ended (EOS) stops the chain, however much room is left.
    assert not next_stage_runs([2], 1, 1000, last_ended=True)
    with pytest.raises(ValueError, match="kept_lengths"):
        next_stage_runs([], 3, 20, last_ended=False)


def test_upstream_advantages_are_normalised_within_each_stage():
    rewards = np.array([0.0, 1.0, -1.0, 1.0, 0.0])
    stages = np.array([1, 1, 1, 2, 2])
    # Stage 1: [0, 1, -1], mean 0, sample std 1 -> [0, 1, -1]. Stage 2: [1, 0], mean 0.5, std 1/sqrt(2)
    # -> [+1/sqrt(2), -1/sqrt(2)]. (Pooled: mean 0.2, std 0.837 -> -0.24, 0.96, ... : not this.)
    np.testing.assert_allclose(
        upstream_advantages_by_stage(rewards, np.zeros(5), stages, 1e-12), [0, 1, -1, R2, -R2], atol=1e-9
    )
    # rms, per stage: stage 1 a / sqrt(2/3); stage 2 [1, 0] / sqrt(1/2).
    rms = upstream_advantages_by_stage(rewards, np.zeros(5), stages, 1e-12, upstream_advantages_rms)
    np.testing.assert_allclose(rms, [0, 1.5**0.5, -(1.5**0.5), 2**0.5, 0], atol=1e-9)
    # Excluded rows (first visits under first_visit_upstream=zero) get 0 and leave their stage's statistics:
    # stage 1 keeps [0, 1] -> [-1/sqrt(2), +1/sqrt(2)]; stage 2 keeps one row -> 0.
    excluded = np.array([False, False, True, True, False])
    np.testing.assert_allclose(
        upstream_advantages_by_stage(rewards, np.zeros(5), stages, 1e-12, excluded=excluded),
        [-R2, R2, 0, 0, 0],
        atol=1e-9,
    )


def test_one_stage_is_the_papers_batch_normalisation():
    rewards, baselines = np.array([0.25, 1.0, -0.5, 0.75]), np.array([0.0, 0.5, 0.0, -0.25])
    from skpo_verl.core.advantages import upstream_advantages

    np.testing.assert_array_equal(
        upstream_advantages_by_stage(rewards, baselines, np.ones(4, int), 1e-6),
        upstream_advantages(rewards, baselines, 1e-6),
    )


# --- start-up refusals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"num_splits": 0}, "algorithm.skpo.num_splits=0 must be an integer >= 1"),
        ({"num_splits": 1.5}, "algorithm.skpo.num_splits=1.5 must be an integer >= 1"),
        ({"num_splits": 2, "conditioning": "continual"}, "num_splits=2 needs algorithm.skpo.conditioning=skip"),
        ({"num_splits": 3, "conditioning": "unconditional"}, "answers from q alone would give every stage"),
        ({"num_splits": 2, "upstream_reward": "own_completion"}, "upstream_reward=own_completion"),
    ],
)
def test_settings_that_do_not_fit_multi_split_are_refused_naming_the_key(settings, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        SKPOConfig(**settings)


def test_start_up_validation_names_num_splits_and_the_fixes():
    from skpo_verl.validation import SKPOConfigError, validate_config

    base = SKPO
    # verl's default budgets 512 + 512: t_max = 0.5 x max(1024, 512) = 512; two segments are capped at 511.
    with pytest.raises(SKPOConfigError) as error:
        validate_config(
            compose_ppo_config([*base, "+algorithm.skpo.num_splits=2", "+algorithm.skpo.conditioning=continual"])
        )
    assert "num_splits=2 needs algorithm.skpo.conditioning=skip" in str(error.value)
    with pytest.raises(SKPOConfigError, match="Set actor_rollout_ref.rollout.prompt_length=1023"):
        validate_config(
            compose_ppo_config([*base, "+algorithm.skpo.num_splits=2", "actor_rollout_ref.rollout.prompt_length=1022"])
        )
    config = compose_ppo_config([*base, "+algorithm.skpo.num_splits=2", "actor_rollout_ref.rollout.prompt_length=1023"])
    assert validate_config(config).num_splits == 2


def test_multi_split_accepts_the_skip_layouts_and_mc_rewards():
    assert SKPOConfig(num_splits=3, skip_format="chat", upstream_reward="first_answer").num_splits == 3
    assert SKPOConfig().num_splits == 1  # the paper


def test_the_prompt_budget_must_hold_k_segments():
    verl = compose_ppo_config()
    # The paper's lengths: t_max = 3072 / 2 = 1536; K = 2 segments before q, at most 2 x 1536 = 3072 but
    # kept under response_length (3071 at most, next_stage_runs): 1024 + 3071 = 4095. K = 3: also 4095.
    fits_one = [*PAPER, "actor_rollout_ref.rollout.prompt_length=2560", "actor_rollout_ref.rollout.max_model_len=8192"]
    assert check_lengths(config_with(verl, fits_one)).max_downstream_prompt == 2560
    with pytest.raises(SKPOLengthError) as error:
        check_lengths(config_with(verl, [*fits_one, "+algorithm.skpo.num_splits=2"]))
    message = str(error.value)
    assert "num_splits=2 segments of up to 1536 tokens each, together at most response_length - 1 = 3071" in message
    assert "Set actor_rollout_ref.rollout.prompt_length=4095" in message
    assert "Or lower algorithm.skpo.num_splits=2." in message
    budget = check_lengths(
        config_with(verl, [*fits_one, "+algorithm.skpo.num_splits=3", "actor_rollout_ref.rollout.prompt_length=4095"])
    )
    assert (budget.max_downstream_prompt, budget.max_sequence) == (4095, 4095 + 3072)
    # Where K x t_max is the tighter bound: split_high 1/4 of L <= 32 gives t_max = 8, so 64 + 2 x 8 = 80.
    small = ["data.max_prompt_length=64", "data.max_response_length=32", "+algorithm.skpo.tracker.initial_length=32"]
    small += ["+algorithm.skpo.split_low=0.1", "+algorithm.skpo.split_high=0.25", "+algorithm.skpo.num_splits=2"]
    with pytest.raises(SKPOLengthError, match="prompt_length=80"):
        check_lengths(config_with(verl, [*small, "actor_rollout_ref.rollout.prompt_length=79"]))
    fits = check_lengths(config_with(verl, [*small, "actor_rollout_ref.rollout.prompt_length=80"]))
    assert (fits.max_split_length, fits.max_downstream_prompt) == (8, 80)


# --- the estimator on a hand-built K = 2 batch --------------------------------------------------------------------

T = 4


def _batch(prompts):
    """prompts: (uid, key, stage, ended, answer rewards, answer length, candidate tokens) per stage of a prompt.

    Each stage contributes its upstream row (response of 2 tokens) then its answers (sessions 0..).
    """
    fields = {name: [] for name in ("up", "key", "uid", "session", "stage", "ended", "reward", "length", "cand")}

    def add(up, key, uid, session, stage, ended, reward, length, cand):
        for name, value in zip(fields, (up, key, uid, session, stage, ended, reward, length, cand)):
            fields[name].append(value)

    for uid, key, stage, ended, answers, length, cand in prompts:
        add(True, key, uid, 0, stage, ended, 0.0, 2, cand)
        for session, reward in enumerate(answers):
            add(False, key, uid, session, stage, ended, reward, length, cand)
    n = len(fields["up"])
    rows = SKPORows(
        is_upstream=np.array(fields["up"]),
        prompt_keys=np.array(fields["key"], dtype=object),
        groups=np.array(fields["uid"], dtype=object),
        sessions=np.array(fields["session"]),
        is_padding=np.zeros(n, dtype=bool),
        segment_lengths=np.full(n, 2),
        split_lengths=np.full(n, 3),
        completion_rewards=np.zeros(n),
        segment_nll=np.ones(n),
        candidate_tokens=np.array(fields["cand"]),
        early_eos_candidates=np.zeros(n, dtype=int),
        stages=np.array(fields["stage"]),
        segment_ended=np.array(fields["ended"]),
    )
    token_rewards = torch.zeros(n, T)
    mask = torch.zeros(n, T)
    for i, (reward, length) in enumerate(zip(fields["reward"], fields["length"])):
        mask[i, :length] = 1
        token_rewards[i, length - 1] = reward
    return token_rewards, mask, rows


def _run(prompts, state, step):
    token_rewards, mask, rows = _batch(prompts)
    metrics = {}
    advantages, _ = compute_skpo_advantage(
        token_rewards, mask, skpo_rows=rows, skpo_state=state, global_step=step, metrics=metrics
    )
    return advantages.sum(dim=1) / mask.sum(dim=1), rows, metrics  # each row's scalar advantage


# Step 1. Prompt a (key 7) and b (key 8) run both stages; c (key 9) stops after stage 1 (its kept candidate
# ended). Stage-1 answers are 4 tokens long, stage-2 answers 3; candidates decoded 10 tokens at stage 1, 6 at 2.
STEP_1 = [
    ("a", 7, 1, 0, [1, -1], 4, 10),
    ("a", 7, 2, 0, [1, 1], 3, 6),
    ("b", 8, 1, 0, [1, 1], 4, 10),
    ("b", 8, 2, 0, [-1, 1], 3, 6),
    ("c", 9, 1, 1, [-1, -1], 4, 10),
]


def test_k2_advantages_trackers_and_metrics_by_hand():
    state = SKPOState(SKPOConfig(num_splits=2))
    advantages, _, metrics = _run(STEP_1, state, step=1)
    adv = {}
    i = 0
    for uid, _, stage, _, answers, _, _ in STEP_1:
        adv[(uid, stage)] = advantages[i : i + 1 + len(answers)].tolist()
        i += 1 + len(answers)

    # Upstream, first visits (V_prev = 0): stage 1 R_I = [0, 1, -1] (a, b, c) -> mean 0, std 1 -> [0, 1, -1];
    # stage 2 R_I = [1, 0] (a, b) -> [+1/sqrt(2), -1/sqrt(2)], normalised among stage 2 alone.
    assert [adv[("a", 1)][0], adv[("b", 1)][0], adv[("c", 1)][0]] == pytest.approx([0, 1, -1], abs=1e-5)
    assert [adv[("a", 2)][0], adv[("b", 2)][0]] == pytest.approx([R2, -R2], abs=1e-5)
    # Downstream, within (uid, stage): a1 [1, -1] -> +-1/sqrt(2); b1, a2, c1 constant -> 0; b2 [-1, 1] -> -+.
    assert adv[("a", 1)][1:] == pytest.approx([R2, -R2], abs=1e-5)
    assert adv[("a", 2)][1:] == pytest.approx([0, 0]) and adv[("b", 1)][1:] == pytest.approx([0, 0])
    assert adv[("b", 2)][1:] == pytest.approx([-R2, R2], abs=1e-5)
    assert adv[("c", 1)][1:] == pytest.approx([0, 0])

    # Trackers: stage 1 on the prompt key (the sampler's tracker holds only prompts), stage 2 on (key, 2).
    assert len(state.values) == 3 and len(state.stage_values) == 2
    assert [tracker_to_reward(state.values.value(k)) for k in (7, 8, 9)] == pytest.approx([0, 1, -1])
    assert tracker_to_reward(state.stage_values.value((7, 2))) == pytest.approx(1)
    assert tracker_to_reward(state.stage_values.value((8, 2))) == pytest.approx(0)
    assert (9, 2) not in state.stage_values
    # L_q learns from stage-1 answers only: 4 tokens (the stage-2 answers' 3 would give 3.5).
    assert state.lengths.value(7) == pytest.approx(4.0)

    assert metrics["skpo/multi_split/stages_mean"] == pytest.approx(5 / 3)
    assert metrics["skpo/multi_split/all_stages_rate"] == pytest.approx(2 / 3)
    assert metrics["skpo/multi_split/stopped_eos_rate"] == pytest.approx(1 / 3)
    assert metrics["skpo/multi_split/stopped_budget_rate"] == 0.0
    assert metrics["skpo/upstream/reward_mean_stage1"] == pytest.approx(0.0)
    assert metrics["skpo/upstream/reward_mean_stage2"] == pytest.approx(0.5)
    assert metrics["skpo/upstream/rows_stage1"] == 3 and metrics["skpo/upstream/rows_stage2"] == 2
    assert metrics["skpo/downstream/reward_mean_stage2"] == pytest.approx(0.5)
    # Candidate tokens per upstream row (10, 6, 10, 6, 10) -> 8.4, so rows x mean = 42 for the step;
    # per prompt over its stages: (10 + 6, 10 + 6, 10) / 3 = 14.
    assert metrics["skpo/rollout/candidate_tokens_mean"] == pytest.approx(8.4)
    assert metrics["skpo/multi_split/candidate_tokens_per_prompt"] == pytest.approx(14.0)
    assert metrics["skpo/rollout/candidate_tokens_mean_stage2"] == pytest.approx(6.0)
    # Downstream groups are (uid, stage): a1 and b2 vary, b1, a2, c1 do not -> 3 of 5 constant.
    assert metrics["skpo/downstream/zero_adv_group_rate"] == pytest.approx(3 / 5)
    assert metrics["skpo/tracker/prompts"] == 3 and metrics["skpo/tracker/stage_values"] == 2


def test_k2_revisits_are_judged_against_each_stages_own_tracker():
    state = SKPOState(SKPOConfig(num_splits=2))
    _run(STEP_1, state, step=1)
    step_2 = [
        ("a2", 7, 1, 0, [1, 1], 4, 10),  # R_I = 1 against V(7) = 0: raw 1
        ("a2", 7, 2, 0, [-1, -1], 3, 6),  # R_I = -1 against V(7, 2) = 1: raw -2
        ("b2", 8, 1, 0, [-1, -1], 4, 10),  # R_I = -1 against V(8) = 1: raw -2
        ("b2", 8, 2, 0, [1, 1], 3, 6),  # R_I = 1 against V(8, 2) = 0: raw 1
    ]
    advantages, rows, metrics = _run(step_2, state, step=2)
    up = advantages[torch.as_tensor(rows.is_upstream)].tolist()
    # Stage 1 raw [1, -2] -> [+1/sqrt(2), -1/sqrt(2)]; stage 2 raw [-2, 1] -> [-1/sqrt(2), +1/sqrt(2)].
    assert up == pytest.approx([R2, -R2, -R2, R2], abs=1e-5)
    assert metrics["skpo/upstream/baseline_mean_stage2"] == pytest.approx(0.5)  # V(7, 2) = 1, V(8, 2) = 0
    assert metrics["skpo/upstream/first_visit_rate_stage2"] == 0.0
    # (7, 2) seen at step 1, now step 2: rho = 2^(-1/8) (inside [0.875, 0.96]); S = rho x 1 + 0, N = rho + 1.
    rho = 2 ** (-1 / 8)
    assert state.stage_values.value((7, 2)) == pytest.approx(rho / (rho + 1))
    assert state.stage_values.count((7, 2)) == pytest.approx(rho + 1)


def test_rows_without_stages_are_stage_one():
    # The same batch with `stages` left out (a one-split run's rows) and with every stage given as 1.
    prompts = [("a", 7, 1, 0, [1, -1], 4, 10), ("b", 8, 1, 0, [1, 1], 4, 10)]
    token_rewards, mask, rows = _batch(prompts)
    got = compute_skpo_advantage(token_rewards, mask, skpo_rows=rows, skpo_state=SKPOState(SKPOConfig()))[0]
    rows.stages, rows.segment_ended = None, None
    again = compute_skpo_advantage(token_rewards, mask, skpo_rows=rows, skpo_state=SKPOState(SKPOConfig()))[0]
    assert torch.equal(got, again)


# --- state: later split lengths, checkpoint -----------------------------------------------------------------------


def test_later_split_lengths_follow_the_first_from_the_same_generator():
    one = SKPOState(SKPOConfig(seed=3))
    three = SKPOState(SKPOConfig(seed=3, num_splits=3))
    for state in (one, three):
        state.lengths.update(5, 60.0, 0.96, 1)  # L = 60 -> t in [10, 30]
    first = three.split_lengths([5, 6], step=2)
    assert first.tolist() == one.split_lengths([5, 6], step=2).tolist()  # t_1 is the one-split draw
    later = three.later_split_lengths([5, 6], step=2)
    assert later.shape == (2, 2) and later.dtype == np.int64
    assert all(10 <= t <= 30 for t in later[0]) and all(171 <= t <= 512 for t in later[1])  # unseen: L = 1024
    fixed = SKPOState(SKPOConfig(num_splits=2, split_rule="fixed"))
    fixed.lengths.update(5, 60.0, 0.96, 1)
    assert fixed.later_split_lengths([5], step=3).tolist() == [[30]]  # odd step: t_max


def test_stage_trackers_are_checkpointed_and_a_one_split_checkpoint_is_unchanged(tmp_path):
    state = SKPOState(SKPOConfig(num_splits=2))
    _run(STEP_1, state, step=1)
    state.save(str(tmp_path / "k2"))
    restored = SKPOState(SKPOConfig(num_splits=2))
    restored.load(str(tmp_path / "k2"))
    assert restored.stage_values.state_dict() == state.stage_values.state_dict()
    assert restored.stage_values.value((7, 2)) == state.stage_values.value((7, 2))

    one = SKPOState(SKPOConfig())
    assert "stage_values" not in one.state_dict()  # K = 1 writes what it wrote before
    one.values.update(7, 1.0, 0.96, 1)
    one.save(str(tmp_path / "k1"))
    resumed = SKPOState(SKPOConfig(num_splits=2))  # a one-split checkpoint resumed with two splits
    resumed.load(str(tmp_path / "k1"))
    assert resumed.values.value(7) == 1.0 and len(resumed.stage_values) == 0


# --- the V1 trainer shim: K x (n + 1) rows per prompt, t_2..t_K before rollout ------------------------------------

SKPO = [
    "algorithm.adv_estimator=skpo",
    "actor_rollout_ref.actor.policy_loss.loss_mode=skpo",
    "actor_rollout_ref.rollout.agent.default_agent_loop=skpo_agent",
    "actor_rollout_ref.rollout.n=3",
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",
]


def test_mini_batches_count_k_times_n_plus_one_rows_per_prompt():
    trainer = v1_trainer([*SKPO, "+algorithm.skpo.num_splits=2"])
    # 2 prompts x 2 stages x (3 + 1) rows = 16 rows per mini-batch; with dp 4: lcm(4, 16) = 16.
    assert trainer._get_required_batch_multiple(4) == 16
    assert trainer.config.actor_rollout_ref.rollout.n == 3  # restored afterwards
    assert v1_trainer(SKPO)._get_required_batch_multiple(3) == math.lcm(3, 8)  # K = 1: n + 1 rows


def test_later_split_lengths_are_added_to_each_prompt_before_rollout():
    from verl.utils import tensordict_utils as tu

    from skpo_verl.patches import trainer_v1

    trainer = v1_trainer([*SKPO, "+algorithm.skpo.num_splits=3"], step=2)
    trainer.skpo_state.lengths.update(11, 60.0, 0.96, 1)  # L = 60 -> t in [10, 30]
    batch = tu.get_tensordict({"index": np.array([10, 11], dtype=object), "x": torch.zeros(2)})
    out = trainer_v1._next_train_batch(lambda self, num_prompts=None: batch, trainer)
    later = out["skpo_later_split_lengths"]
    assert later.shape == (2, 2)
    assert all(171 <= t <= 512 for t in later[0].tolist()) and all(10 <= t <= 30 for t in later[1].tolist())

    one = v1_trainer(SKPO, step=2)
    batch = tu.get_tensordict({"index": np.array([10], dtype=object), "x": torch.zeros(1)})
    assert "skpo_later_split_lengths" not in trainer_v1._next_train_batch(lambda self, n=None: batch, one).keys()


# --- the launchers: NUM_SPLITS=K makes room for K segments and sets the key ----------------------------------------


def test_launchers_make_room_for_k_segments_when_num_splits_is_set():
    from test_launchers import compose_verl, launcher_overrides, validate_like_verl

    config = compose_verl(launcher_overrides("skpo_llama3.2_3b_instruct.sh", NUM_SPLITS="2"))
    validate_like_verl(config)
    assert config.algorithm.skpo.num_splits == 2
    # [s_1, s_2, q]: the problem's 1024 + 2 segments of at most 3072 / 2 tokens.
    assert config.actor_rollout_ref.rollout.prompt_length == 1024 + 2 * 1536
    assert check_lengths(config).max_downstream_prompt == 4095  # <= the launcher's 4096
    # The CPU demo's launcher: 64-token problems, L_q starts at the 32-token answer budget -> 64 + 2 x 16.
    demo = compose_verl(launcher_overrides("cpu_tiny_skpo.sh", NUM_SPLITS="2"))
    assert (demo.algorithm.skpo.num_splits, demo.actor_rollout_ref.rollout.prompt_length) == (2, 96)
    one = compose_verl(launcher_overrides("cpu_tiny_skpo.sh"))
    assert "num_splits" not in one.algorithm.skpo and one.actor_rollout_ref.rollout.prompt_length == 80  # K = 1
