"""Reduction tests: SKPO's pipeline through verl's real V1 code paths, checked against verl's own GRPO.

(a) With `conditioning=unconditional`, `loss.upstream_weight=0`, `loss.downstream_weight=1` and
    the downstream clip at verl's vanilla bounds [0.8, 1.2], SKPO's downstream rows must get
    verl's GRPO advantages, and its loss must be verl's own CISPO loss (the downstream term is
    CISPO's, docs/algorithm.md, Loss), whose gradient equals vanilla PPO's wherever the ratio is
    inside the clip range.
(b) Every upstream row reaches the loss with its own normalised R_I - V_prev after verl's
    TransferQueue, `_balance_batch` (padding and reordering), the dispatch to data-parallel
    ranks and the actor worker's mini-batch and micro-batch splits.

Each check is a function; the corruption tests feed it damaged data (two rows swapped, a sign
flipped, the role mask shifted by a row) and require it to fail.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import pytest
import torch
from actor_split import ActorWorkers, loss_and_gradients, ratio_one, seeded_log_ratios
from v1_trainer import Prompt, grpo_rows, put_rows, skpo_rows, v1_trainer, write_old_log_probs

from skpo_verl.validation import validate_config

DP_SIZE = 2

# ---------------------------------------------------------------------------------------------
# (a) Reduction to GRPO
# ---------------------------------------------------------------------------------------------

GROUP = 4
REDUCTION = [
    "algorithm.adv_estimator=skpo",
    "actor_rollout_ref.actor.policy_loss.loss_mode=skpo",
    "actor_rollout_ref.rollout.agent.default_agent_loop=skpo_agent",
    f"actor_rollout_ref.rollout.n={GROUP}",
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",
    "+algorithm.skpo.conditioning=unconditional",
    "+algorithm.skpo.loss.upstream_weight=0.0",
    "+algorithm.skpo.loss.downstream_weight=1.0",
    "+algorithm.skpo.loss.downstream_clip_low=0.2",
    "+algorithm.skpo.loss.downstream_clip_high=0.2",
]
GRPO = [
    "algorithm.adv_estimator=grpo",
    f"actor_rollout_ref.rollout.n={GROUP}",
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",
]
# Unequal prompt and answer lengths; uB is a constant-reward group.
REDUCTION_PROMPTS = [
    Prompt("uA", 30, 5, (1.0, -1.0, -1.0, 1.0), (5, 3, 7, 2), segment_length=3),
    Prompt("uB", 31, 7, (-1.0, -1.0, -1.0, -1.0), (4, 6, 1, 3), segment_length=2),
    Prompt("uC", 32, 4, (1.0, 1.0, 1.0, -1.0), (2, 8, 3, 5), segment_length=4),
]
# Hand-computed GRPO advantages (std with ddof = 1, as torch.std):
# uA: mean 0, std sqrt(4/3) -> +-sqrt(3)/2; uB: constant -> 0; uC: mean 1/2, std 1 -> [1/2, 1/2, 1/2, -3/2].
HALF_SQRT3 = math.sqrt(3) / 2
HAND_GRPO = {
    ("uA", 0): HALF_SQRT3, ("uA", 1): -HALF_SQRT3, ("uA", 2): -HALF_SQRT3, ("uA", 3): HALF_SQRT3,
    ("uB", 0): 0.0, ("uB", 1): 0.0, ("uB", 2): 0.0, ("uB", 3): 0.0,
    ("uC", 0): 0.5, ("uC", 1): 0.5, ("uC", 2): 0.5, ("uC", 3): -1.5,
}  # fmt: skip


def _advantage_step(trainer, tq, rows, partition_id, compute_advantage):
    """verl's `_step_once` up to the advantages: `_balance_batch` (pads, reorders), the old
    log-probs (seeded, in place of the actor's pass), then `compute_advantage`."""
    batch = trainer._balance_batch(put_rows(tq, rows, partition_id), metrics={})
    write_old_log_probs(tq, batch, seed=0)
    compute_advantage(batch, {})
    return batch


def _unshimmed_compute_advantage(trainer):
    """verl's own `PPOTrainer._compute_advantage`, below SKPO's wrapper."""
    return functools.partial(type(trainer)._compute_advantage.__wrapped__, trainer)


def _answer_advantages(tq, batch) -> dict:
    """(uid, session) -> the per-token advantages verl stored for each answer row (no padding, no upstream row)."""
    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id)
    upstream = [int(u) for u in data["skpo_is_upstream"]] if "skpo_is_upstream" in data.keys() else [0] * len(batch)
    out = {}
    for i, tag in enumerate(batch.tags):
        if tag.get("is_padding", False) or upstream[i]:
            continue
        out[(data["uid"][i], int(data["session_id"][i]))] = data["advantages"][i].tolist()
    return out


def check_same_answer_advantages(skpo: dict, grpo: dict) -> None:
    """Every answer row has the same per-token advantages under both estimators."""
    assert sorted(skpo) == sorted(grpo), f"different answer rows: {sorted(skpo)} vs {sorted(grpo)}"
    for row, values in grpo.items():
        assert len(skpo[row]) == len(values), f"{row}: {len(skpo[row])} tokens vs {len(values)}"
        np.testing.assert_allclose(skpo[row], values, atol=1e-5, err_msg=f"answer row {row}")


@pytest.fixture
def reduction_advantages(transfer_queue):
    tq = transfer_queue
    skpo_trainer = v1_trainer(REDUCTION, dp_size=DP_SIZE)
    validate_config(skpo_trainer.config)  # a configuration SKPO starts with
    grpo_trainer = v1_trainer(GRPO, dp_size=DP_SIZE)
    skpo_rows_of_step = skpo_rows(REDUCTION_PROMPTS, "unconditional")
    skpo_batch = _advantage_step(skpo_trainer, tq, skpo_rows_of_step, "skpo", skpo_trainer._compute_advantage)
    grpo_compute = _unshimmed_compute_advantage(grpo_trainer)
    grpo_batch = _advantage_step(grpo_trainer, tq, grpo_rows(REDUCTION_PROMPTS), "grpo", grpo_compute)
    return tq, skpo_trainer, skpo_batch, grpo_batch


def test_unconditional_skpo_gives_each_answer_verls_grpo_advantage(reduction_advantages):
    tq, _, skpo_batch, grpo_batch = reduction_advantages
    # verl padded both batches (SKPO: 15 rows -> lcm(2, 2 x 5) = 10 -> 20; GRPO: 12 -> lcm(2, 2 x 4) = 8 -> 16).
    assert [len(skpo_batch), len(grpo_batch)] == [20, 16]
    skpo, grpo = _answer_advantages(tq, skpo_batch), _answer_advantages(tq, grpo_batch)
    check_same_answer_advantages(skpo, grpo)
    for row, value in HAND_GRPO.items():
        assert grpo[row] == pytest.approx([value] * len(grpo[row]), abs=1e-5), row
    assert len(grpo[("uC", 1)]) == 8 and len(grpo[("uB", 2)]) == 1


def _swap_rows(advantages: dict, a, b) -> dict:
    """Exchange two rows' advantages, each row keeping its own length."""
    out = dict(advantages)
    out[a], out[b] = [advantages[b][0]] * len(advantages[a]), [advantages[a][0]] * len(advantages[b])
    return out


def test_the_grpo_advantage_check_fails_on_swapped_rows_or_a_flipped_sign(reduction_advantages):
    tq, _, skpo_batch, grpo_batch = reduction_advantages
    skpo, grpo = _answer_advantages(tq, skpo_batch), _answer_advantages(tq, grpo_batch)
    with pytest.raises(AssertionError):
        check_same_answer_advantages(_swap_rows(skpo, ("uA", 0), ("uA", 1)), grpo)
    with pytest.raises(AssertionError):
        check_same_answer_advantages(_swap_rows(skpo, ("uA", 0), ("uC", 3)), grpo)
    flipped = dict(skpo)
    flipped[("uC", 3)] = [-a for a in skpo[("uC", 3)]]
    with pytest.raises(AssertionError):
        check_same_answer_advantages(flipped, grpo)


# --- the loss, through verl's real `ppo_loss` (as the actor worker binds it) -----------------


def _answer_micro_batch(tq, batch, trainer):
    """One micro-batch of all answer rows of the SKPO batch, as the worker gets them from TransferQueue,
    with the driver's loss settings and normalisers for a mini-batch of just these rows."""
    from verl.utils import tensordict_utils as tu

    from skpo_verl.training.loss import LossNormalisers, step_role_counts

    roles = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["skpo_upstream_mask"])
    upstream = roles["skpo_upstream_mask"].tolist()
    keys = [k for k, tag, up in zip(batch.keys, batch.tags, upstream) if not up and not tag.get("is_padding")]
    fields = ["uid", "session_id", "prompts", "responses", "response_mask", "old_log_probs", "advantages"]
    fields.append("skpo_upstream_mask")
    data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=fields)
    counts = step_role_counts(data["skpo_upstream_mask"], data["response_mask"])
    tu.assign_non_tensor(
        data,
        dp_size=1,
        batch_num_tokens=counts["downstream_tokens"],
        global_batch_size=len(keys),
        skpo_loss=dataclasses.asdict(trainer.skpo_state.config.loss),
        skpo_loss_normalisers=dataclasses.asdict(LossNormalisers.for_mini_batches(counts, 1)),
    )
    return data


def check_loss_equals(skpo_loss: float, verl_loss: float) -> None:
    assert skpo_loss == pytest.approx(verl_loss, abs=1e-6), f"SKPO loss {skpo_loss} != verl's {verl_loss}"


def check_gradients_equal(skpo_grads, verl_grads) -> None:
    assert len(skpo_grads) == len(verl_grads)
    for row, (ours, theirs) in enumerate(zip(skpo_grads, verl_grads)):
        np.testing.assert_allclose(ours, theirs, atol=1e-7, err_msg=f"gradient of row {row}")


@pytest.fixture
def answer_micro_batch(reduction_advantages):
    tq, trainer, skpo_batch, _ = reduction_advantages
    data = _answer_micro_batch(tq, skpo_batch, trainer)
    assert data["skpo_upstream_mask"].sum() == 0 and len(data) == 12
    return data


def _set_row(micro_batch, row: int, value: float) -> None:
    """Give every token of one row the advantage `value` (in place)."""
    offsets = micro_batch["advantages"].offsets()
    micro_batch["advantages"].values()[offsets[row] : offsets[row + 1]] = value


def _row_value(micro_batch, row: int) -> float:
    return float(micro_batch["advantages"][row][0])


def _flip_row(data, row: int):
    """A copy of the micro-batch with one row's advantage negated."""
    corrupted = data.clone()
    _set_row(corrupted, row, -_row_value(data, row))
    return corrupted


def _swap_rows_of(data, a: int, b: int):
    """A copy of the micro-batch with two rows' advantages exchanged (each keeps its length)."""
    corrupted = data.clone()
    _set_row(corrupted, a, _row_value(data, b))
    _set_row(corrupted, b, _row_value(data, a))
    return corrupted


def _answer_row(data, uid: str, session: int) -> int:
    return next(i for i in range(len(data)) if data["uid"][i] == uid and int(data["session_id"][i]) == session)


def test_the_downstream_loss_is_verls_cispo_loss_and_the_check_fails_on_a_flipped_sign(answer_micro_batch):
    data = answer_micro_batch
    log_ratios = seeded_log_ratios(0.6, 1.5, seed=1)  # some ratios outside [0.8, 1.2]: the clip is exercised
    skpo, _ = loss_and_gradients("skpo", data, log_ratios)
    cispo, _ = loss_and_gradients("cispo", data, seeded_log_ratios(0.6, 1.5, seed=1))
    check_loss_equals(skpo, cispo)
    assert skpo != 0.0
    corrupted = _flip_row(data, _answer_row(data, "uC", 3))
    flipped, _ = loss_and_gradients("skpo", corrupted, seeded_log_ratios(0.6, 1.5, seed=1))
    with pytest.raises(AssertionError):
        check_loss_equals(flipped, cispo)


def test_at_the_first_mini_batch_the_gradient_is_vanilla_ppos(answer_micro_batch):
    """r = 1: d/dlog pi of SKPO's -sg(r) A log pi and of PPO's -r A are both -A / (answer tokens)."""
    data = answer_micro_batch
    _, skpo = loss_and_gradients("skpo", data, ratio_one)
    _, vanilla = loss_and_gradients("vanilla", data, ratio_one)
    check_gradients_equal(skpo, vanilla)
    tokens = int(data["response_mask"].values().sum())
    assert tokens == 5 + 3 + 7 + 2 + 4 + 6 + 1 + 3 + 2 + 8 + 3 + 5
    row = _answer_row(data, "uC", 3)
    assert skpo[row] == pytest.approx([1.5 / tokens] * 5, abs=1e-7)  # -A / N with A = -3/2
    swapped = _swap_rows_of(data, _answer_row(data, "uA", 0), _answer_row(data, "uA", 1))
    _, swapped_grads = loss_and_gradients("skpo", swapped, ratio_one)
    with pytest.raises(AssertionError):
        check_gradients_equal(swapped_grads, vanilla)
    _, flipped_grads = loss_and_gradients("skpo", _flip_row(data, row), ratio_one)
    with pytest.raises(AssertionError):
        check_gradients_equal(flipped_grads, vanilla)


def test_inside_the_clip_range_the_gradient_is_vanilla_ppos_and_outside_cispo_keeps_the_clipped_weight(
    answer_micro_batch,
):
    """d/dlog pi: SKPO (CISPO) -clip(r) A / N, PPO -r A / N where its unclipped term is active, else 0.

    Both carry the factor r (CISPO through its stop-gradient weight, PPO through d r / d log pi
    = r), so inside [0.8, 1.2] they are equal; they differ only where PPO clips.
    """
    data = answer_micro_batch
    _, skpo = loss_and_gradients("skpo", data, seeded_log_ratios(0.85, 1.15, seed=2))
    _, vanilla = loss_and_gradients("vanilla", data, seeded_log_ratios(0.85, 1.15, seed=2))
    check_gradients_equal(skpo, vanilla)

    tokens = int(data["response_mask"].values().sum())
    row = _answer_row(data, "uA", 0)  # A = +sqrt(3)/2, 5 tokens
    ratios = [1.1, 1.3, 0.7, 1.0, 1.25]

    def fixed(row_index, length):
        return torch.log(torch.tensor(ratios)) if row_index == row else torch.zeros(length)

    _, skpo = loss_and_gradients("skpo", data, fixed)
    _, vanilla = loss_and_gradients("vanilla", data, fixed)
    a = HALF_SQRT3
    # CISPO: the weight clip(r) = [1.1, 1.2, 0.8, 1.0, 1.2], no token loses its gradient.
    assert skpo[row] == pytest.approx([-w * a / tokens for w in (1.1, 1.2, 0.8, 1.0, 1.2)], abs=1e-6)
    # PPO with A > 0 clips r > 1.2 (no gradient); r = 0.7 < 0.8 keeps its unclipped term -r A.
    assert vanilla[row] == pytest.approx([-w * a / tokens for w in (1.1, 0.0, 0.7, 1.0, 0.0)], abs=1e-6)
    with pytest.raises(AssertionError):
        check_gradients_equal(skpo, vanilla)


# ---------------------------------------------------------------------------------------------
# (b) Upstream rows after TransferQueue, padding and mini-batch splitting
# ---------------------------------------------------------------------------------------------

UPSTREAM_GROUP = 3
UPSTREAM = [
    "algorithm.adv_estimator=skpo",
    "actor_rollout_ref.actor.policy_loss.loss_mode=skpo",
    "actor_rollout_ref.rollout.agent.default_agent_loop=skpo_agent",
    f"actor_rollout_ref.rollout.n={UPSTREAM_GROUP}",
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=160",
    "actor_rollout_ref.rollout.prompt_length=1024",  # room for [s, q] (start-up check)
]
# (prompt, V_prev in reward space tracked from step 3, or None for a first visit)
UPSTREAM_PROMPTS = [
    (Prompt("uA", 20, 4, (1.0, 1.0, -1.0), (3, 5, 2), segment_length=2), None),
    (Prompt("uB", 21, 6, (1.0, 1.0, 1.0), (4, 1, 6), segment_length=3), 0.9),
    (Prompt("uC", 22, 3, (-1.0, -1.0, 1.0), (2, 2, 7), segment_length=1), -0.8),
    (Prompt("uD", 23, 5, (1.0, -1.0, -1.0), (6, 3, 4), segment_length=4), 0.5),
    (Prompt("uE", 24, 4, (-1.0, -1.0, -1.0), (5, 2, 3), segment_length=2), -0.6),
]
# R_I (mean answer reward) - V_prev: [1/3 - 0, 1 - 0.9, -1/3 + 0.8, -1/3 - 0.5, -1 + 0.6]
#   = [10, 3, 14, -25, -12] / 30, mean -2/30, centred c = [12, 5, 16, -23, -10] / 30,
#   sample std sqrt(sum c^2 / 4) = sqrt(1054 / 4) / 30, so A = [12, 5, 16, -23, -10] / sqrt(263.5).
# uC's R_I is negative but its advantage the batch's largest; uB's R_I is the largest, its advantage small.
EXPECTED_UPSTREAM = dict(zip([20, 21, 22, 23, 24], np.array([12.0, 5.0, 16.0, -23.0, -10.0]) / math.sqrt(263.5)))


def check_upstream_advantages_reach_the_loss(micro_batches, expected: dict) -> None:
    """Each real upstream row, and only it, is marked upstream for the loss, appears once, and
    drives the loss with its own prompt's advantage.

    The advantage is read off the gradient of verl's `ppo_loss` (SKPO's role shim) at r = 1:
    d loss / d log pi(s_t) = -w_up * A / (|s| * upstream rows of the step / mini-batches), with the
    normalisers the driver sent.
    """
    from verl.utils import tensordict_utils as tu

    seen = {}
    for micro_batch in micro_batches:
        upstream_mask = micro_batch["skpo_upstream_mask"].tolist()
        real_upstream = [
            bool(int(up)) and not str(uid).startswith("pad")
            for up, uid in zip(micro_batch["skpo_is_upstream"], micro_batch["uid"])
        ]
        assert upstream_mask == [int(r) for r in real_upstream], (
            f"upstream mask {upstream_mask} does not mark exactly the upstream rows {real_upstream}"
        )
        if not any(upstream_mask):
            continue
        _, grads = loss_and_gradients("skpo", micro_batch, ratio_one)
        upstream_rows = tu.get_non_tensor_data(micro_batch, "skpo_loss_normalisers", None)["upstream_rows"]
        weight = tu.get_non_tensor_data(micro_batch, "skpo_loss", None)["upstream_weight"]
        for row in np.flatnonzero(upstream_mask):
            grad = grads[row]
            advantage = -grad[0] * len(grad) * upstream_rows / weight
            np.testing.assert_allclose(grad, grad[0], atol=1e-9, err_msg="one advantage per upstream row")
            key = int(micro_batch["index"][row])
            assert key not in seen, f"prompt {key}'s upstream row reached the loss twice"
            seen[key] = advantage
    assert sorted(seen) == sorted(expected), f"upstream rows of prompts {sorted(seen)}, expected {sorted(expected)}"
    for key, advantage in seen.items():
        assert advantage == pytest.approx(expected[key], abs=1e-5), f"prompt {key}: A = {advantage}"


@pytest.fixture(params=[(False, False), (True, True)], ids=["fixed-micro-batches", "dynamic-bsz-shuffled"])
def upstream_micro_batches(request, transfer_queue):
    """One SKPO step of five prompts through the driver and the actor's split, dp = 2."""
    from verl.utils.config import omega_conf_to_dataclass

    from skpo_verl.core.tracker import reward_to_tracker

    dynamic_bsz, shuffle = request.param
    tq = transfer_queue
    trainer = v1_trainer(
        UPSTREAM
        + [f"actor_rollout_ref.actor.use_dynamic_bsz={dynamic_bsz}", f"actor_rollout_ref.actor.shuffle={shuffle}"],
        dp_size=DP_SIZE,
    )
    for prompt, value in UPSTREAM_PROMPTS:
        if value is not None:  # a previous visit at step 3; the first observation sets V
            trainer.skpo_state.values.update(prompt.index, float(reward_to_tracker(value)), 0.96, 3)
    validate_config(trainer.config)  # a configuration SKPO starts with
    actor_config = omega_conf_to_dataclass(trainer.config.actor_rollout_ref.actor)
    trainer.actor_rollout_wg = workers = ActorWorkers(DP_SIZE, actor_config)

    batch = trainer._balance_batch(put_rows(tq, skpo_rows([p for p, _ in UPSTREAM_PROMPTS]), "upstream"), metrics={})
    write_old_log_probs(tq, batch, seed=3)
    trainer._compute_advantage(batch, {})
    trainer._update_actor(batch, {})
    return workers.micro_batches, actor_config, batch


def test_every_upstream_row_reaches_the_loss_with_its_own_normalised_r_minus_v_prev(upstream_micro_batches):
    micro_batches, _, batch = upstream_micro_batches
    # 5 prompts x 4 rows = 20, padded to lcm(dp 2, 2 prompts x 4 rows) = 8 -> 24 rows.
    assert len(batch) == 24 and sum(tag.get("is_padding", False) for tag in batch.tags) == 4
    assert sum(len(mb) for mb in micro_batches) == 24
    check_upstream_advantages_reach_the_loss(micro_batches, EXPECTED_UPSTREAM)
    assert EXPECTED_UPSTREAM[22] > EXPECTED_UPSTREAM[21] > 0 > EXPECTED_UPSTREAM[24]


def _upstream_rows(micro_batches):
    """(micro-batch number, row) of each real upstream row, in order."""
    return [
        (m, row)
        for m, mb in enumerate(micro_batches)
        for row, (up, uid) in enumerate(zip(mb["skpo_is_upstream"], mb["uid"]))
        if int(up) and not str(uid).startswith("pad")
    ]


def test_the_upstream_check_fails_on_swapped_rows_a_flipped_sign_or_a_shifted_role_mask(upstream_micro_batches):
    micro_batches, _, _ = upstream_micro_batches
    (m1, r1), (m2, r2) = _upstream_rows(micro_batches)[:2]

    swapped = [mb.clone() for mb in micro_batches]
    a1, a2 = _row_value(swapped[m1], r1), _row_value(swapped[m2], r2)
    _set_row(swapped[m1], r1, a2)
    _set_row(swapped[m2], r2, a1)
    with pytest.raises(AssertionError):
        check_upstream_advantages_reach_the_loss(swapped, EXPECTED_UPSTREAM)

    flipped = [mb.clone() for mb in micro_batches]
    _set_row(flipped[m1], r1, -a1)
    with pytest.raises(AssertionError):
        check_upstream_advantages_reach_the_loss(flipped, EXPECTED_UPSTREAM)

    shifted = [mb.clone() for mb in micro_batches]
    shifted[m1]["skpo_upstream_mask"] = torch.roll(shifted[m1]["skpo_upstream_mask"], 1)
    with pytest.raises(AssertionError):
        check_upstream_advantages_reach_the_loss(shifted, EXPECTED_UPSTREAM)
