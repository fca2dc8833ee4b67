"""The spatial upstream baseline (`algorithm.skpo.upstream_baseline=spatial`, ours; docs/algorithm.md,
"Spatial upstream baseline (ours)"): the start-up refusals, the estimator on hand-built batches and the
driver's rows per prompt. Every number below is worked out by hand in the comments.
"""

import math

import numpy as np
import pytest
import torch
from v1_trainer import v1_trainer

from skpo_verl import rows as R
from skpo_verl.config import SKPOConfig
from skpo_verl.core.tracker import tracker_to_reward
from skpo_verl.rows import SKPORows
from skpo_verl.training.estimator import compute_skpo_advantage
from skpo_verl.training.state import SKPOState
from skpo_verl.verl_config import compose_ppo_config

SPATIAL = SKPOConfig(upstream_baseline="spatial")
R2 = 2**-0.5

# --- start-up refusals --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            {"upstream_baseline": "spatiall"},
            "algorithm.skpo.upstream_baseline='spatiall' is not one of tracker, spatial",
        ),
        ({"num_splits": 2}, "upstream_baseline=spatial with num_splits=2: each later stage continues"),
        ({"upstream_reward": "own_completion"}, "own_completion credits a segment with one completion"),
        ({"first_visit_upstream": "zero"}, "the spatial baseline does not read the tracker"),
        ({"num_candidates": 1}, "num_candidates=1: it keeps two different candidates per prompt"),
    ],
)
def test_settings_that_do_not_fit_the_spatial_baseline_are_refused_naming_the_key(settings, message):
    with pytest.raises(ValueError) as error:
        SKPOConfig(**{"upstream_baseline": "spatial", **settings})
    assert message in str(error.value)


def test_the_spatial_baseline_accepts_the_other_settings():
    config = SKPOConfig(
        upstream_baseline="spatial", upstream_reward="first_answer", upstream_norm="rms", num_candidates=2
    )
    assert (config.upstream_baseline, config.selection, config.conditioning) == ("spatial", "median", "skip")
    assert SKPOConfig().upstream_baseline == "tracker"  # the paper


def test_start_up_refuses_an_odd_group_naming_rollout_n():
    from skpo_verl.validation import SKPOConfigError, validate_config

    skpo = [
        "algorithm.adv_estimator=skpo",
        "actor_rollout_ref.actor.policy_loss.loss_mode=skpo",
        "actor_rollout_ref.rollout.agent.default_agent_loop=skpo_agent",
        "actor_rollout_ref.rollout.prompt_length=1024",
        "+algorithm.skpo.upstream_baseline=spatial",
    ]
    with pytest.raises(SKPOConfigError) as error:
        validate_config(compose_ppo_config([*skpo, "actor_rollout_ref.rollout.n=7"]))
    assert "upstream_baseline=spatial with actor_rollout_ref.rollout.n=7" in str(error.value)
    assert "G must be even. Set rollout.n to an even number" in str(error.value)
    assert validate_config(compose_ppo_config([*skpo, "actor_rollout_ref.rollout.n=8"])) == SPATIAL


# --- the estimator on hand-built batches --------------------------------------------------------------------------

T = 4
G = 4


def _batch(prompts):
    """prompts: (uid, key, segments) with segments = ((s_a's answer rewards, their length), (s_b's ...)).

    Rows as the agent loop returns them, read through the driver's `SKPORows.from_columns`: s_a's upstream row
    (session 0) and answers (sessions 0, 1), then s_b's upstream row (session G/2 = 2) and answers (sessions 2,
    3). Every prompt's candidates decoded 12 tokens (on both segments' rows) and one of its 4 candidates ended.
    """
    columns = {name: [] for name in (R.IS_UPSTREAM, R.PROMPT_KEY, R.GROUP, R.SESSION, R.SEGMENT_INDEX)}
    answers = []  # (reward, length) per row; an upstream row's response is 2 tokens
    for uid, key, segments in prompts:
        for index, (rewards, length) in enumerate(segments):
            first = index * G // 2
            for session, upstream in [(first, 1), *((s, 0) for s in range(first, first + len(rewards)))]:
                for name, value in zip(columns, (upstream, key, uid, session, index)):
                    columns[name].append(value)
            answers += [(0.0, 2)] + [(reward, length) for reward in rewards]
    n = len(answers)
    constant = {R.SEGMENT_LENGTH: 2, R.SPLIT_LENGTH: 3, R.SEGMENT_NLL: 1.0, R.CANDIDATE_TOKENS: 12}
    constant |= {R.EARLY_EOS_CANDIDATES: 1, R.COMPLETION_REWARD: 0.0, R.COMPLETION_TOKENS: 0}
    rows = SKPORows.from_columns({**columns, **{name: [value] * n for name, value in constant.items()}}, [False] * n)
    token_rewards = torch.zeros(n, T)
    mask = torch.zeros(n, T)
    for i, (reward, length) in enumerate(answers):
        mask[i, :length] = 1
        token_rewards[i, length - 1] = reward
    return token_rewards, mask, rows


def _run(prompts, state, step=1, judged_clean=None):
    token_rewards, mask, rows = _batch(prompts)
    metrics = {}
    advantages, _ = compute_skpo_advantage(
        token_rewards,
        mask,
        skpo_rows=rows,
        skpo_state=state,
        global_step=step,
        metrics=metrics,
        judged_clean=judged_clean,
    )
    return (advantages.sum(dim=1) / mask.sum(dim=1)).numpy(), rows, metrics  # each row's scalar advantage


# s_a's answers are 2 tokens long, s_b's 4.
STEP_1 = [
    ("u1", 7, (([1, 1], 2), ([1, -1], 4))),  # R_I = 1 and 0
    ("u2", 8, (([-1, -1], 2), ([1, 1], 4))),  # R_I = -1 and 1
    ("u3", 9, (([1, -1], 2), ([-1, 1], 4))),  # R_I = 0 and 0: a tie
]


def test_spatial_advantages_trackers_and_metrics_by_hand():
    state = SKPOState(SPATIAL)
    advantages, rows, metrics = _run(STEP_1, state)
    up, down = rows.is_upstream, ~rows.is_upstream

    # Upstream: baselines b = mean of each prompt's two R_I = 0.5, 0, 0; a = R_I - b = [0.5, -0.5, -1, 1, 0, 0]
    # (= +-(R_a - R_b)/2); batch normalisation: mean 0, sample std sqrt((0.25 + 0.25 + 1 + 1) / 5) = sqrt(0.5).
    np.testing.assert_allclose(advantages[up], [R2, -R2, -2 * R2, 2 * R2, 0, 0], atol=1e-5)
    # Downstream: group-relative over all G = 4 answers of the uid, both segments together.
    # u1 [1, 1, 1, -1]: mean 0.5, sample std 1 -> [0.5, 0.5, 0.5, -1.5]; u2 [-1, -1, 1, 1] and u3 [1, -1, -1, 1]:
    # mean 0, sample std sqrt(4/3) -> +-sqrt(3)/2.
    h = 3**0.5 / 2
    np.testing.assert_allclose(advantages[down], [0.5, 0.5, 0.5, -1.5, -h, -h, h, h, h, -h, -h, h], atol=1e-5)

    # One tracker observation per prompt: the mean of its two R_I = the mean of all G answers (0.5, 0, 0),
    # overwriting the initial value at a first visit. L_q: the mean of the segments' answer lengths, (2 + 4) / 2.
    assert [tracker_to_reward(state.values.value(k)) for k in (7, 8, 9)] == pytest.approx([0.5, 0.0, 0.0])
    assert state.values.count(7) == pytest.approx(1.0) and state.values.version == 3
    assert state.lengths.value(7) == pytest.approx(3.0)

    assert metrics["skpo/upstream/spatial_tie_rate"] == pytest.approx(1 / 3)
    assert metrics["skpo/upstream/rows"] == 6 and metrics["skpo/downstream/rows"] == 12
    assert metrics["skpo/upstream/reward_mean"] == pytest.approx(1 / 6)  # (1 + 0 - 1 + 1 + 0 + 0) / 6
    assert metrics["skpo/upstream/baseline_mean"] == pytest.approx(1 / 6)  # (0.5 + 0.5 + 0 x 4) / 6
    assert metrics["skpo/upstream/advantage_mean"] == pytest.approx(0.0)
    assert metrics["skpo/upstream/first_visit_rate"] == 1.0
    assert metrics["skpo/downstream/zero_adv_group_rate"] == 0.0  # groups are uids; none is constant
    # 12 candidate tokens per prompt, counted once: 36 over 6 upstream rows, so rows x mean = 36.
    assert metrics["skpo/rollout/candidate_tokens_mean"] == pytest.approx(6.0)
    assert metrics["skpo/rollout/early_eos_share"] == pytest.approx(0.25)  # 1 of G = 4 candidates


def test_a_revisit_is_judged_against_its_other_segment_not_its_tracked_value():
    state = SKPOState(SPATIAL)
    _run(STEP_1, state, step=1)  # V(7) = 0.5, V(8) = 0
    step_2 = [
        ("v1", 7, (([-1, -1], 2), ([1, 1], 2))),  # R_I = -1 and 1: b = 0 (V_prev = 0.5 is not read)
        ("v2", 8, (([1, 1], 2), ([1, -1], 2))),  # R_I = 1 and 0: b = 0.5
    ]
    advantages, rows, metrics = _run(step_2, state, step=2)
    # a = [-1, 1, 0.5, -0.5]: mean 0, sample std sqrt(2.5 / 3) = 0.912871.
    np.testing.assert_allclose(advantages[rows.is_upstream], np.array([-1, 1, 0.5, -0.5]) / 0.9128709, atol=1e-5)
    assert metrics["skpo/upstream/baseline_mean"] == pytest.approx(0.25)  # (0, 0, 0.5, 0.5)
    assert metrics["skpo/upstream/first_visit_rate"] == 0.0
    # Prompt 7's tracker takes the mean of its two R_I, 0 (0.5 in tracker space), with rho = 2^(-1/8) (one step):
    # alpha = rho x 0.75 + 0.5, beta = rho x 0.25 + 0.5 -> V = (0.75 rho + 0.5) / (rho + 1).
    rho = 2 ** (-1 / 8)
    assert state.values.value(7) == pytest.approx((0.75 * rho + 0.5) / (rho + 1))


def test_first_answer_credits_each_segment_with_its_own_first_answer():
    # s_a's first answer is session 0's, s_b's session 2's: R_I = [1, 1], [-1, 1], [1, -1] -> a = [0, 0, -1, 1, 1, -1].
    state = SKPOState(SKPOConfig(upstream_baseline="spatial", upstream_reward="first_answer"))
    advantages, rows, metrics = _run(STEP_1, state)
    # mean 0, sample std sqrt(4 / 5)
    np.testing.assert_allclose(advantages[rows.is_upstream], np.array([0, 0, -1, 1, 1, -1]) / 0.8**0.5, atol=1e-5)
    assert metrics["skpo/upstream/spatial_tie_rate"] == pytest.approx(1 / 3)
    assert tracker_to_reward(state.values.value(8)) == pytest.approx(0.0)  # the mean of its two R_I, -1 and 1


def test_the_segment_judge_reads_the_spatial_advantage_of_each_upstream_row():
    # One verdict per upstream row. Spatial A signs: +, -, -, +, 0, 0 (u3 ties, so it has no sign).
    judged_clean = np.array([True, False, True, True, True, False])
    _, _, metrics = _run(STEP_1, SKPOState(SPATIAL), judged_clean=judged_clean)
    assert metrics["skpo/upstream/oracle_signed_rows_first_visit"] == 4
    assert metrics["skpo/upstream/oracle_agreeing_rows_first_visit"] == 3  # u2's s_a is clean but pushed down
    assert metrics["skpo/upstream/oracle_agreement_first_visit"] == pytest.approx(0.75)

    # upstream_advantage=oracle trains on the judge's signs instead, normalised the same way: a = +-1,
    # [1, -1, 1, 1, 1, -1], mean 1/3, sample std sqrt((4/9 x 4 + 16/9 x 2) / 5) = sqrt(16/15).
    oracle = SKPOConfig(
        upstream_baseline="spatial", upstream_advantage="oracle", segment_judge="skpo_verl.demo.task:segment_is_clean"
    )
    advantages, rows, metrics = _run(STEP_1, SKPOState(oracle), judged_clean=judged_clean)
    signs = np.array([1, -1, 1, 1, 1, -1])
    np.testing.assert_allclose(advantages[rows.is_upstream], (signs - 1 / 3) / (16 / 15) ** 0.5, atol=1e-5)
    assert metrics["skpo/upstream/oracle_agreement_first_visit"] == pytest.approx(0.75)  # still the spatial A


def test_malformed_spatial_batches_are_refused_naming_the_layout():
    token_rewards, mask, rows = _batch(STEP_1)
    rows.is_upstream[3] = False  # u1's s_b loses its upstream row (row 3 is s_b's upstream row of u1)
    with pytest.raises(ValueError) as error:
        compute_skpo_advantage(token_rewards, mask, skpo_rows=rows, skpo_state=SKPOState(SPATIAL))
    message = str(error.value)
    assert "each uid needs two kept segments (skpo_segment_index 0 and 1)" in message
    assert "uids with other segment indices than [0, 1]: ['u1']" in message

    # The spatial rows under the paper's tracker baseline: two upstream rows per uid is not its layout.
    token_rewards, mask, rows = _batch(STEP_1)
    with pytest.raises(ValueError, match=r"one upstream row \(skpo_segment_index 0\)"):
        compute_skpo_advantage(token_rewards, mask, skpo_rows=rows, skpo_state=SKPOState(SKPOConfig()))


# --- the V1 trainer shim: G + 2 rows per prompt -------------------------------------------------------------------

SKPO = [
    "algorithm.adv_estimator=skpo",
    "actor_rollout_ref.actor.policy_loss.loss_mode=skpo",
    "actor_rollout_ref.rollout.agent.default_agent_loop=skpo_agent",
    "actor_rollout_ref.rollout.n=4",
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",
]


def test_rows_per_prompt_are_g_plus_two_with_the_spatial_baseline():
    from skpo_verl.patches.trainer_v1 import rows_per_prompt

    assert rows_per_prompt(4, SPATIAL) == 6  # two upstream rows and G answers
    assert rows_per_prompt(4, SKPOConfig()) == 5  # the paper: G + 1
    assert rows_per_prompt(4, SKPOConfig(num_splits=2)) == 10  # multi-split: K x (G + 1)
    trainer = v1_trainer([*SKPO, "+algorithm.skpo.upstream_baseline=spatial"])
    # 2 prompts x (4 + 2) rows = 12 rows per mini-batch; with dp 8: lcm(8, 12) = 24.
    assert trainer._get_required_batch_multiple(8) == 24
    assert trainer.config.actor_rollout_ref.rollout.n == 4  # restored afterwards
    assert v1_trainer(SKPO)._get_required_batch_multiple(8) == math.lcm(8, 10)  # the paper: n + 1 rows


def test_the_logprob_divergence_is_measured_once_per_prompt_on_s_a():
    from types import SimpleNamespace

    from skpo_verl.patches.trainer_v1 import _upstream_keys

    _, _, rows = _batch(STEP_1)
    batch = SimpleNamespace(keys=[f"row{i}" for i in range(len(rows.is_upstream))])
    keys, prompt_keys = _upstream_keys(batch, rows)
    # Per prompt 6 rows: s_a's upstream row (0), its 2 answers, s_b's upstream row (3), its 2 answers.
    assert keys == ["row0", "row6", "row12"] and prompt_keys.tolist() == [7, 8, 9]
