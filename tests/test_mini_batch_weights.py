"""Every row weighs what the paper's loss gives it when a step has several mini-batches and ranks.

verl's `_balance_batch` deals rows to data-parallel ranks by sequence length, so one prompt's
upstream row and answers land in different mini-batches and a mini-batch holds however many
upstream rows the dealing gave it. The rule (docs/algorithm.md, "Mini-batches and ranks"): each
mini-batch divides by its share of the step's counts, U / M upstream rows and D / M downstream
tokens for M mini-batches, so every upstream row weighs w_up M / U and every downstream token
w_down M / D whichever mini-batch it is in. Checked on one step of 8 prompts, G = 3, through
verl's real `_balance_batch`, SKPO's `_compute_advantage` and `_update_actor`, verl's dispatch
to 2 ranks and its split into 4 mini-batches of 2 prompts' rows and their micro-batches, and
verl's real `ppo_loss` on every micro-batch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from actor_split import ActorWorkers, loss_and_gradients, ratio_one
from v1_trainer import Prompt, put_rows, skpo_rows, v1_trainer, write_old_log_probs

DP_SIZE = 2
MINI_BATCHES = 4
OVERRIDES = [
    "algorithm.adv_estimator=skpo",
    "actor_rollout_ref.actor.policy_loss.loss_mode=skpo",
    "actor_rollout_ref.rollout.agent.default_agent_loop=skpo_agent",
    "actor_rollout_ref.rollout.n=3",
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",  # 8 prompts = 4 mini-batches of 2 prompts x 4 rows
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.actor.use_dynamic_bsz=False",
    "actor_rollout_ref.rollout.prompt_length=1024",
]
# Unequal segment and answer lengths, so the length-balanced dealing puts 2, 3, 1 and 2 upstream rows in
# the four mini-batches (test_the_dealing_is_uneven_so_the_rule_is_tested); R_I
# differ from prompt to prompt, so no upstream advantage is 0; every group has a right and a wrong answer.
PROMPTS = [
    Prompt("uA", 30, 8, (1.0, -1.0, -1.0), (1, 5, 9), segment_length=7),
    Prompt("uB", 31, 9, (1.0, 1.0, -1.0), (13, 14, 5), segment_length=7),
    Prompt("uC", 32, 9, (-1.0, 1.0, -1.0), (10, 4, 9), segment_length=6),
    Prompt("uD", 33, 4, (1.0, -1.0, 1.0), (3, 13, 2), segment_length=5),
    Prompt("uE", 34, 6, (-1.0, -1.0, 1.0), (12, 13, 10), segment_length=9),
    Prompt("uF", 35, 4, (1.0, 1.0, -1.0), (2, 12, 2), segment_length=5),
    Prompt("uG", 36, 7, (-1.0, 1.0, -1.0), (9, 2, 6), segment_length=8),
    Prompt("uH", 37, 8, (1.0, -1.0, 1.0), (10, 11, 4), segment_length=6),
]
W_UP = W_DOWN = 0.5  # the paper's weights (the default algorithm.skpo.loss)


@pytest.fixture(scope="module")
def update(transfer_queue):
    """The step's micro-batches, grouped by global mini-batch j: [micro-batches of rank 0 and 1 at j]."""
    from verl.utils.config import omega_conf_to_dataclass

    tq = transfer_queue
    trainer = v1_trainer(OVERRIDES, dp_size=DP_SIZE)
    config = omega_conf_to_dataclass(trainer.config.actor_rollout_ref.actor)
    trainer.actor_rollout_wg = workers = ActorWorkers(DP_SIZE, config)
    batch = trainer._balance_batch(put_rows(tq, skpo_rows(PROMPTS), "mini_batches"), metrics={})
    write_old_log_probs(tq, batch, seed=5)
    trainer._compute_advantage(batch, {})
    trainer._update_actor(batch, {})
    by_mini_batch = [[] for _ in range(MINI_BATCHES)]
    for _, number, micro_batches in workers.mini_batches:
        by_mini_batch[number].extend(micro_batches)
    return by_mini_batch


def _rows(micro_batch):
    """(is upstream, advantage, log pi_old per token) of each row with tokens (padding rows have none)."""
    return [
        (bool(int(up)), float(adv[0]), old.tolist())
        for up, adv, old in zip(
            micro_batch["skpo_upstream_mask"], micro_batch["advantages"].unbind(), micro_batch["old_log_probs"].unbind()
        )
        if len(adv)
    ]


def check_row_weights(by_mini_batch) -> None:
    """Read each row's weight off verl's loss gradient at r = 1 (d loss / d log pi_t = -weight_t A):
    every upstream row w_up M / U, every downstream token w_down M / D; per mini-batch, the upstream
    term's share of the step's is its upstream rows' (prompts') share."""
    upstream_rows = len(PROMPTS)
    downstream_tokens = sum(sum(p.answer_lengths) for p in PROMPTS)
    up_weight_of_mini_batch, up_rows_of_mini_batch = [], []
    for micro_batches in by_mini_batch:
        up_weight, up_rows = 0.0, 0
        for micro_batch in micro_batches:
            _, grads = loss_and_gradients("skpo", micro_batch, ratio_one)
            for (upstream, advantage, _), grad in zip(_rows(micro_batch), [g for g in grads if g]):
                if upstream:
                    row_weight = -sum(grad) / advantage
                    assert row_weight == pytest.approx(W_UP * MINI_BATCHES / upstream_rows, rel=1e-5)
                    up_weight, up_rows = up_weight + row_weight, up_rows + 1
                elif advantage != 0.0:
                    token_weights = -np.asarray(grad) / advantage
                    np.testing.assert_allclose(token_weights, W_DOWN * MINI_BATCHES / downstream_tokens, rtol=1e-5)
        up_weight_of_mini_batch.append(up_weight)
        up_rows_of_mini_batch.append(up_rows)
    shares = np.array(up_weight_of_mini_batch) / sum(up_weight_of_mini_batch)
    np.testing.assert_allclose(shares, np.array(up_rows_of_mini_batch) / upstream_rows, rtol=1e-5)


def log_ratio(old_log_probs: np.ndarray) -> np.ndarray:
    """log r per token, a fixed function of the token's old log-prob: r in [0.67, 1.49], so both clips act."""
    return 0.4 * np.sin(7.0 * old_log_probs)


def _log_ratios_of(micro_batch):
    """`log_ratio` of each row of a micro-batch, in the form `loss_and_gradients` takes."""
    olds = [old.double().numpy() for old in micro_batch["old_log_probs"].unbind()]
    return lambda row, length: torch.from_numpy(log_ratio(olds[row])).float()


def paper_loss(by_mini_batch) -> float:
    """The paper's loss of the step, by hand from the rows' advantages and log-probs (numpy):
    w_up mean_b L_up_b + w_down sum L_down_t / D, L_up_b = mean_t -min(r A, clip(r, 0.8, 1.2) A),
    L_down_t = -clip(r, 0.8, 1.28) A log pi_t, log pi = log pi_old + log r."""
    up_losses, down_sum, down_tokens = [], 0.0, 0
    for micro_batches in by_mini_batch:
        for micro_batch in micro_batches:
            for upstream, advantage, old in _rows(micro_batch):
                old = np.asarray(old, dtype=np.float32).astype(np.float64)
                ratio = np.exp(log_ratio(old))
                if upstream:
                    up_losses.append(np.mean(-np.minimum(ratio * advantage, np.clip(ratio, 0.8, 1.2) * advantage)))
                else:
                    down_sum += float(np.sum(-np.clip(ratio, 0.8, 1.28) * advantage * (old + np.log(ratio))))
                    down_tokens += len(old)
    assert len(up_losses) == len(PROMPTS) and down_tokens == sum(sum(p.answer_lengths) for p in PROMPTS)
    return W_UP * np.mean(up_losses) + W_DOWN * down_sum / down_tokens


def test_the_dealing_is_uneven_so_the_rule_is_tested(update):
    up_rows = [sum(sum(up for up, _, _ in _rows(mb)) for mb in micro_batches) for micro_batches in update]
    assert up_rows == [2, 3, 1, 2]


def test_every_row_weighs_the_same_in_whichever_mini_batch_and_rank_it_is_dealt_to(update):
    check_row_weights(update)


def test_the_mini_batch_losses_add_up_to_m_times_the_papers_loss_of_the_step(update):
    total = sum(
        loss_and_gradients("skpo", micro_batch, _log_ratios_of(micro_batch))[0]
        for micro_batches in update
        for micro_batch in micro_batches
    )
    by_hand = paper_loss(update)
    assert by_hand != 0.0
    assert total == pytest.approx(MINI_BATCHES * by_hand, rel=1e-4)
