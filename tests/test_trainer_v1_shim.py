"""The V1 trainer shim, run on verl's real PPOTrainer methods, TransferQueue and padding.

Batch: two prompts, G = 3, so 4 rows each (1 upstream + 3 downstream), stored in an
in-process TransferQueue the way verl's agent-loop worker stores them, then padded by
verl's own `upsample_batch_to_divisible_size` to a multiple of 5 (2 padding rows that copy
the first row, with an empty response mask: an upstream row, or in one test a downstream
answer).
"""

import math
import os

import numpy as np
import pytest
import torch
from v1_trainer import v1_trainer

from skpo_verl.training.state import STATE_FILE

SKPO = [
    "algorithm.adv_estimator=skpo",
    "actor_rollout_ref.actor.policy_loss.loss_mode=skpo",
    "actor_rollout_ref.rollout.agent.default_agent_loop=skpo_agent",
    "actor_rollout_ref.rollout.n=3",
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",
]


def _trainer(overrides=(), step=5):
    return v1_trainer(SKPO + list(overrides), step=step)


def _row(uid, index, session, upstream, response_len, reward, segment_len=3):
    rm_scores = torch.zeros(response_len)
    rm_scores[-1] = reward
    return {
        "prompts": torch.full((4,), 7, dtype=torch.int64),
        "responses": torch.full((response_len,), 8, dtype=torch.int64),
        "response_mask": torch.ones(response_len, dtype=torch.int64),
        "rollout_log_probs": torch.full((response_len,), -1.0),
        "rm_scores": rm_scores,
        "uid": uid,
        "index": index,
        "session_id": session,
        "skpo_is_upstream": int(upstream),
        "skpo_split_length": 6,
        "skpo_segment_length": segment_len,
        "skpo_segment_nll": 1.5,
        "skpo_candidate_tokens": 15,
        "skpo_early_eos_candidates": 1,
        "skpo_completion_reward": 0.0,
        "skpo_completion_tokens": 0,
    }


def _put_batch(tq, first="uA_0_0", multiple=5):
    """The two prompts' rows, `first` stored first (verl's padding copies it), padded to a multiple of `multiple`."""
    from tensordict import NonTensorData  # noqa: F401 - tensordict must be importable for TQ
    from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    rows = {
        "uA_0_0": _row("uA", 10, 0, True, 3, 0.0),
        "uA_0_1": _row("uA", 10, 0, False, 4, 1.0),
        "uA_1_0": _row("uA", 10, 1, False, 2, -1.0),
        "uA_2_0": _row("uA", 10, 2, False, 6, 1.0),
        "uB_0_0": _row("uB", 11, 0, True, 2, 0.0, segment_len=2),
        "uB_0_1": _row("uB", 11, 0, False, 5, -1.0),
        "uB_1_0": _row("uB", 11, 1, False, 5, -1.0),
        "uB_2_0": _row("uB", 11, 2, False, 5, -1.0),
    }
    keys = [first] + [key for key in rows if key != first]
    tags = [{"status": "success", "seq_len": 4 + len(rows[k]["responses"]), "global_steps": 5} for k in keys]
    tq.kv_batch_put(
        keys=keys, partition_id="train", fields=list_of_dict_to_tensordict([rows[k] for k in keys]), tags=tags
    )
    batch = tq.KVBatchMeta(partition_id="train", keys=keys, tags=tags)
    return upsample_batch_to_divisible_size(batch, multiple, eos_token_id=0)


def test_advantage_step_writes_skpo_advantages_and_updates_the_trackers(transfer_queue):
    tq = transfer_queue
    batch = _put_batch(tq)
    assert len(batch) == 10 and sum(tag.get("is_padding", False) for tag in batch.tags) == 2

    trainer = _trainer()
    metrics = {}
    trainer._compute_advantage(batch, metrics)
    out = tq.kv_batch_get(
        keys=batch.keys, partition_id="train", select_fields=["advantages", "returns", "skpo_upstream_mask"]
    )
    per_row = [float(a[0]) if len(a) else 0.0 for a in out["advantages"].unbind()]

    # Downstream A: rewards [+1, -1, +1] → mean 1/3, sample std sqrt(4/3): [1/sqrt3, -2/sqrt3, 1/sqrt3].
    # Downstream B: rewards all -1 → 0.
    # Upstream: R_I = [1/3, -1], baselines V_prev = 0 → [1/3, -1]; centred ±2/3, normalised over the
    # two upstream rows with the sample std (2/3 * sqrt2) → [+1/sqrt2, -1/sqrt2].
    s3, s2 = math.sqrt(3), math.sqrt(2)
    expected = [1 / s2, 1 / s3, -2 / s3, 1 / s3, -1 / s2, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert per_row == pytest.approx(expected, abs=1e-5)
    # Every response token of a row carries the row's advantage; returns equal advantages.
    assert out["advantages"].unbind()[3].tolist() == pytest.approx([1 / s3] * 6, abs=1e-5)
    assert torch.equal(out["returns"].values(), out["advantages"].values())
    # Only real upstream rows are marked for the loss (padding copies of row 0 are not).
    assert out["skpo_upstream_mask"].tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 0, 0]

    state = trainer.skpo_state
    # First observation overwrites the zero init: V = R_I; tracker space (r+1)/2.
    assert state.values.value(10) == pytest.approx((1 / 3 + 1) / 2)
    assert state.values.value(11) == pytest.approx(0.0)
    # Lengths: mean downstream answer length, A: (4+2+6)/3 = 4, B: 5.
    assert state.lengths.value(10) == pytest.approx(4.0) and state.lengths.value(11) == pytest.approx(5.0)
    assert state.values.last_seen(10) == 5

    assert metrics["skpo/upstream/reward_mean"] == pytest.approx((1 / 3 - 1) / 2)
    assert metrics["skpo/downstream/zero_adv_group_rate"] == pytest.approx(0.5)
    assert metrics["skpo/upstream/rows"] == 2 and metrics["skpo/downstream/rows"] == 6
    assert metrics["skpo/split_length_mean"] == 6.0
    assert metrics["skpo/tracker/rho_mean"] == pytest.approx(0.96)
    # 1 of the G = 3 candidates ended early, on both prompts; G candidates of 15 tokens in all.
    assert metrics["skpo/rollout/early_eos_share"] == pytest.approx(1 / 3)
    assert metrics["skpo/rollout/candidate_tokens_mean"] == 15.0
    assert metrics["skpo/rollout/segment_nll_mean"] == 1.5
    assert metrics["skpo/upstream/segment_length_mean"] == 2.5 and metrics["skpo/downstream/answer_length_mean"] == 4.5


def test_padding_copies_of_a_downstream_first_row_are_not_counted_as_answers(transfer_queue):
    """verl pads a batch with copies of its first row (empty response mask, zero reward, the SKPO
    fields of that row) under one fresh uid `pad<hex>`, sessions 0, 1, ... With a downstream answer
    first, the padding rows look like the answers of a prompt of their own: counted, they would be a
    group without an upstream row and enter the `skpo/downstream/*` statistics as zero-reward,
    zero-length answers. The advantages and counts must be those of the 8 real rows."""
    from skpo_verl.training.loss import step_role_counts

    tq = transfer_queue
    batch = _put_batch(tq, first="uA_1_0")  # prompt A's session-1 answer: reward -1, 2 tokens
    padding = [tag.get("is_padding", False) for tag in batch.tags]
    assert padding == [False] * 8 + [True] * 2
    copied = tq.kv_batch_get(keys=batch.keys[-2:], partition_id="train", select_fields=["uid", "skpo_is_upstream"])
    assert len(set(copied["uid"])) == 1 and copied["uid"][0].startswith("pad")
    assert list(copied["skpo_is_upstream"]) == [0, 0]

    metrics = {}
    _trainer()._compute_advantage(batch, metrics)
    out = tq.kv_batch_get(keys=batch.keys, partition_id="train", select_fields=["advantages", "skpo_upstream_mask"])
    per_row = [float(a[0]) if len(a) else 0.0 for a in out["advantages"].unbind()]

    # The first test's numbers, in this order: A's answers [+1, -1, +1] -> [1/sqrt3, -2/sqrt3, 1/sqrt3];
    # B's all -1 -> 0; upstream R_I = [1/3, -1] -> [+1/sqrt2, -1/sqrt2]; padding rows 0.
    s3, s2 = math.sqrt(3), math.sqrt(2)
    expected = [-2 / s3, 1 / s2, 1 / s3, 1 / s3, -1 / s2, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert per_row == pytest.approx(expected, abs=1e-5)
    assert out["skpo_upstream_mask"].tolist() == [0, 1, 0, 0, 1, 0, 0, 0, 0, 0]
    assert metrics["skpo/downstream/rows"] == 6 and metrics["skpo/upstream/rows"] == 2
    # rewards (-1 + 1 + 1 - 1 - 1 - 1) / 6; |A| (2/sqrt3 + 1/sqrt3 + 1/sqrt3 + 0 + 0 + 0) / 6; lengths (2+4+6+5+5+5) / 6
    assert metrics["skpo/downstream/reward_mean"] == pytest.approx(-1 / 3)
    assert metrics["skpo/downstream/advantage_abs_mean"] == pytest.approx(4 / s3 / 6, abs=1e-6)
    assert metrics["skpo/downstream/answer_length_mean"] == pytest.approx(4.5)
    assert metrics["skpo/downstream/zero_adv_group_rate"] == pytest.approx(0.5)
    assert metrics["skpo/upstream/reward_mean"] == pytest.approx((1 / 3 - 1) / 2)
    # The loss's normalisers, counted from the written mask as the driver counts them: 2 upstream rows of
    # 3 + 2 tokens, 27 downstream tokens (padding rows have none).
    mask = tq.kv_batch_get(keys=batch.keys, partition_id="train", select_fields=["response_mask"])["response_mask"]
    counts = step_role_counts(out["skpo_upstream_mask"], mask)
    assert counts == {"upstream_rows": 2, "upstream_tokens": 5, "downstream_tokens": 27}


def test_the_early_eos_share_is_over_the_candidates_when_fewer_than_g(transfer_queue):
    """num_candidates=2 with G = 3 answers: 1 early candidate of 2 is a share of 1/2, not 1/3."""
    batch = _put_batch(transfer_queue)
    metrics = {}
    _trainer(["+algorithm.skpo.num_candidates=2"])._compute_advantage(batch, metrics)
    assert metrics["skpo/rollout/early_eos_share"] == pytest.approx(1 / 2)


def test_a_second_visit_uses_the_pre_update_baseline_and_steps_based_forgetting(transfer_queue):
    tq = transfer_queue
    trainer = _trainer(step=5)
    trainer._compute_advantage(_put_batch(tq), {})
    tq.kv_clear(keys=list(tq.kv_list("train")["train"]), partition_id="train")

    trainer.global_steps = 13  # 8 steps later = one half-life: rho = 0.5 → clipped to rho_min 0.875
    metrics = {}
    batch = _put_batch(tq)
    trainer._compute_advantage(batch, metrics)
    assert metrics["skpo/tracker/rho_mean"] == pytest.approx(0.875)
    # Pre-update baselines are the step-5 values: A raw = R_I - V_prev = [1/3 - 1/3, -1 - (-1)] = 0.
    assert metrics["skpo/upstream/advantage_mean"] == pytest.approx(0.0, abs=1e-12)
    # Beta update with rho: alpha = .875*alpha + r, beta = .875*beta + (1-r); same r → V unchanged.
    assert trainer.skpo_state.values.value(10) == pytest.approx(2 / 3)


def test_rows_without_the_skpo_fields_are_refused_with_the_agent_loop_fix(transfer_queue):
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    tq = transfer_queue
    row = _row("uC", 12, 0, False, 2, 1.0)
    for name in [k for k in row if k.startswith("skpo_")]:
        row.pop(name)
    tq.kv_batch_put(keys=["uC_0_0"], partition_id="train", fields=list_of_dict_to_tensordict([row]), tags=[{}])
    batch = tq.KVBatchMeta(partition_id="train", keys=["uC_0_0"], tags=[{}])
    with pytest.raises(Exception, match="default_agent_loop=skpo_agent"):
        _trainer()._compute_advantage(batch, {})


def test_mini_batches_count_n_plus_one_rows_per_prompt():
    trainer = _trainer()
    trainer._dispatch_info = {}
    # ppo_mini_batch_size 2 prompts * (3 + 1) rows = 8 rows; with dp 4: lcm(4, 8) = 8.
    assert trainer._get_required_batch_multiple(4) == 8
    assert trainer.config.actor_rollout_ref.rollout.n == 3  # restored afterwards
    trainer.skpo_state = None  # a GRPO trainer keeps verl's n rows per prompt: lcm(4, 2 * 3) = 12
    assert trainer._get_required_batch_multiple(4) == 12


def _update_actor_extra_info(trainer, batch) -> tuple[dict, dict]:
    """What `_update_actor` sends the actor workers (the batch's extra info), and its metrics."""
    trainer.distillation_config = None
    seen, metrics = {}, {}

    class Workers:
        def update_actor(self, batch):
            seen.update(batch.extra_info)
            return {"metrics": {"actor/mfu": 0.0, "actor/grad_norm": 1.0}}

    trainer.actor_rollout_wg = Workers()
    trainer._update_actor(batch, metrics)
    return seen, metrics


def test_update_actor_sends_loss_settings_normalisers_and_n_plus_one_row_mini_batches(transfer_queue):
    trainer = _trainer(["+algorithm.skpo.loss.downstream_clip_high=0.3"])
    # 8 rows = one mini-batch of 2 prompts x (G + 1): no padding.
    batch = _put_batch(transfer_queue, multiple=8)
    trainer._compute_advantage(batch, {})
    seen, metrics = _update_actor_extra_info(trainer, batch)
    assert seen["global_batch_size"] == 8 and seen["mini_batch_size"] == 8
    assert seen["skpo_loss"]["downstream_clip_high"] == 0.3 and seen["skpo_loss"]["upstream_clip"] == 0.2
    assert seen["skpo_loss"]["aggregation"] == "per_role"
    # The step's 2 upstream rows (3 + 2 tokens) and 27 downstream tokens, over M = 1 mini-batch.
    assert seen["skpo_loss_normalisers"] == {"upstream_rows": 2.0, "upstream_tokens": 5.0, "downstream_tokens": 27.0}
    assert metrics["skpo/loss/mini_batches"] == 1


def test_update_actor_refuses_a_batch_that_is_not_whole_mini_batches(transfer_queue):
    trainer = _trainer()
    batch = _put_batch(transfer_queue, multiple=5)  # 10 rows against mini-batches of 8
    trainer._compute_advantage(batch, {})
    with pytest.raises(RuntimeError, match="not a whole number of mini-batches of 8 rows"):
        _update_actor_extra_info(trainer, batch)


def test_split_lengths_are_added_to_each_prompt_before_rollout():
    from verl.utils import tensordict_utils as tu

    trainer = _trainer(step=2)
    trainer.skpo_state.lengths.update(11, 600.0, 0.96, 1)  # L = 600 → t in [100, 300]
    batch = tu.get_tensordict({"index": np.array([10, 11], dtype=object), "x": torch.zeros(2)})

    def original_next_train_batch(self, num_prompts=None):
        return batch

    from skpo_verl.patches import trainer_v1

    out = trainer_v1._next_train_batch(original_next_train_batch, trainer)
    low_10, high_10 = 1024 / 6, 1024 / 2
    t = out["skpo_split_length"].tolist()
    assert low_10 - 1 <= t[0] <= high_10 + 1 and 99 <= t[1] <= 301


def test_checkpoint_save_writes_skpo_state_before_verl_marks_the_step_and_resume_restores_it(tmp_path):
    trainer = _trainer(["trainer.default_local_dir=" + str(tmp_path), "trainer.resume_mode=auto"], step=7)
    trainer.skpo_state.values.update("q1", 1.0, 0.96, 7)
    order = []

    def verl_save(self):
        order.append(os.path.exists(tmp_path / "global_step_7" / STATE_FILE))
        (tmp_path / "latest_checkpointed_iteration.txt").write_text("7")

    from skpo_verl.patches import trainer_v1

    trainer_v1._save_checkpoint(verl_save, trainer)
    assert order == [True]

    resumed = _trainer(["trainer.default_local_dir=" + str(tmp_path), "trainer.resume_mode=auto"], step=0)

    def verl_load(self):
        self.global_steps = 7

    trainer_v1._load_checkpoint(verl_load, resumed)
    assert resumed.skpo_state.values.value("q1") == 1.0
    assert resumed.skpo_state.state_dict()["values"] == trainer.skpo_state.state_dict()["values"]


def test_resume_from_a_checkpoint_without_skpo_state_fails_with_the_fix(tmp_path):
    from skpo_verl.patches import trainer_v1

    (tmp_path / "global_step_3").mkdir()
    resumed = _trainer(["trainer.default_local_dir=" + str(tmp_path)], step=0)
    with pytest.raises(FileNotFoundError, match="trainer.resume_mode=disable"):
        trainer_v1._load_checkpoint(lambda self: setattr(self, "global_steps", 3), resumed)
