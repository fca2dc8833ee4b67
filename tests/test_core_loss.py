"""skpo_verl.core.loss: upstream PPO-clip, downstream CISPO, and their weighted sum.

Every case is built from chosen ratios r: old_log_prob = log_prob - log r.
"""

import math

import pytest
import torch

from skpo_verl.config import LossConfig
from skpo_verl.core.loss import downstream_cispo_loss, skpo_loss, skpo_loss_diagnostics, upstream_ppo_loss

CFG = LossConfig()  # w_up = w_down = 0.5, eps = 0.2, CISPO weight in [0.8, 1.28]
DTYPE = torch.float64


def _inputs(log_prob, ratios, advantages, mask):
    log_prob = torch.tensor(log_prob, dtype=DTYPE, requires_grad=True)
    old_log_prob = (log_prob.detach() - torch.tensor(ratios, dtype=DTYPE).log()).requires_grad_(True)
    return log_prob, old_log_prob, torch.tensor(advantages, dtype=DTYPE), torch.tensor(mask, dtype=DTYPE)


def _upstream_case():
    # row 0: r = [1, 1.5, 0.5], A = 1, all tokens; row 1: r = [1.5, 0.5, 7 (padding)], A = -2, two tokens
    return _inputs(
        [[-0.5, -1.0, -2.0], [-0.25, -0.5, -3.0]],
        [[1.0, 1.5, 0.5], [1.5, 0.5, 7.0]],
        [[1.0, 1.0, 1.0], [-2.0, -2.0, -2.0]],
        [[1, 1, 1], [1, 1, 0]],
    )


def test_upstream_ppo_loss_value_and_gradient():
    log_prob, old_log_prob, adv, mask = _upstream_case()
    loss = upstream_ppo_loss(log_prob, old_log_prob, adv, mask, clip=CFG.upstream_clip)
    # row 0 tokens: -min(rA, clip(r, 0.8, 1.2) A) = -min(1, 1) = -1; -min(1.5, 1.2) = -1.2 (clipped);
    #   -min(0.5, 0.8) = -0.5 -> mean -2.7/3 = -0.9
    # row 1 tokens: -min(-3, -2.4) = 3; -min(-1, -1.6) = 1.6 (clipped) -> mean 4.6/2 = 2.3
    torch.testing.assert_close(loss, torch.tensor([-0.9, 2.3], dtype=DTYPE), rtol=0, atol=1e-12)
    loss.sum().backward()
    # d/dlogp of -r A / n where the unclipped term is active (dr/dlogp = r), 0 where the clip is:
    # row 0: [-1*1/3, 0, -0.5*1/3]; row 1: [-1.5*(-2)/2, 0, 0 (padding)]
    expected = torch.tensor([[-1 / 3, 0.0, -1 / 6], [1.5, 0.0, 0.0]], dtype=DTYPE)
    torch.testing.assert_close(log_prob.grad, expected, rtol=0, atol=1e-12)


def test_upstream_ppo_loss_empty_mask_row_is_zero_and_padding_values_are_harmless():
    log_prob = torch.tensor([[-1.0, -math.inf], [-math.inf, -math.inf]], dtype=DTYPE, requires_grad=True)
    old_log_prob = torch.tensor([[-1.0, -math.inf], [0.0, -math.inf]], dtype=DTYPE)
    adv = torch.tensor([[1.0, math.nan], [1.0, 1.0]], dtype=DTYPE)
    mask = torch.tensor([[1, 0], [0, 0]])
    loss = upstream_ppo_loss(log_prob, old_log_prob, adv, mask, clip=0.2)
    # row 0: r = 1, A = 1 -> -1 on its only token; row 1 has no tokens -> 0
    torch.testing.assert_close(loss, torch.tensor([-1.0, 0.0], dtype=DTYPE))
    loss.sum().backward()
    torch.testing.assert_close(log_prob.grad, torch.tensor([[-1.0, 0.0], [0.0, 0.0]], dtype=DTYPE))


def _downstream_case():
    # row 0: r = [1, 1.5, 0.5], A = 1; row 1: r = [1.1, 0.7, 1 (padding)], A = -2
    return _inputs(
        [[-0.5, -1.0, -2.0], [-0.25, -0.5, -3.0]],
        [[1.0, 1.5, 0.5], [1.1, 0.7, 1.0]],
        [[1.0, 1.0, 1.0], [-2.0, -2.0, -2.0]],
        [[1, 1, 1], [1, 1, 0]],
    )


def test_downstream_cispo_loss_value_and_gradient():
    log_prob, old_log_prob, adv, mask = _downstream_case()
    loss = downstream_cispo_loss(log_prob, old_log_prob, adv, mask, CFG.downstream_clip_low, CFG.downstream_clip_high)
    # weights clip(r, 0.8, 1.28): row 0 [1, 1.28, 0.8], row 1 [1.1, 0.8, -]
    # L = -w A logp: row 0 [0.5, 1.28, 1.6]; row 1 [-1.1*(-2)*(-0.25), -0.8*(-2)*(-0.5), 0] = [-0.55, -0.8, 0]
    expected = torch.tensor([[0.5, 1.28, 1.6], [-0.55, -0.8, 0.0]], dtype=DTYPE)
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-12)
    loss.sum().backward()
    # dL/dlogp = -w A with w held constant: row 0 [-1, -1.28, -0.8]; row 1 [2.2, 1.6, 0]
    # (a differentiated weight would add -w A logp on the unclipped tokens, e.g. -0.5 at row 0 token 0)
    expected_grad = torch.tensor([[-1.0, -1.28, -0.8], [2.2, 1.6, 0.0]], dtype=DTYPE)
    torch.testing.assert_close(log_prob.grad, expected_grad, rtol=0, atol=1e-12)
    # the weight is stop-gradient: nothing flows back into pi_old
    assert old_log_prob.grad is None or torch.all(old_log_prob.grad == 0)


def _skpo_case():
    # row 0 upstream: r = [1, 1.5, 0.5], A = 1; row 1 downstream: r = [1.1, 0.7, 1 (padding)], A = -2
    inputs = _inputs(
        [[-0.5, -1.0, -2.0], [-0.25, -0.5, -3.0]],
        [[1.0, 1.5, 0.5], [1.1, 0.7, 1.0]],
        [[1.0, 1.0, 1.0], [-2.0, -2.0, -2.0]],
        [[1, 1, 1], [1, 1, 0]],
    )
    return (*inputs, torch.tensor([True, False]))


def _skpo_loss(*inputs, upstream_rows, downstream_tokens, upstream_tokens=0, aggregation="per_role", scale=1.0):
    """(skpo_loss, skpo_loss_diagnostics) at the paper's weights and clips."""
    settings = dict(
        upstream_rows=upstream_rows,
        upstream_tokens=upstream_tokens,
        downstream_tokens=downstream_tokens,
        aggregation=aggregation,
        upstream_weight=CFG.upstream_weight,
        downstream_weight=CFG.downstream_weight,
        upstream_clip=CFG.upstream_clip,
        downstream_clip_low=CFG.downstream_clip_low,
        downstream_clip_high=CFG.downstream_clip_high,
    )
    return skpo_loss(*inputs, **settings, scale=scale), skpo_loss_diagnostics(*inputs, **settings)


def test_skpo_loss_normalises_by_global_counts_and_weights_the_roles():
    log_prob, old_log_prob, adv, mask, is_upstream = _skpo_case()
    loss, metrics = _skpo_loss(
        log_prob, old_log_prob, adv, mask, is_upstream, upstream_rows=4, downstream_tokens=10, scale=2.0
    )
    # upstream row 0: L = -0.9 (PPO case above); downstream row 1: sum L = -0.55 - 0.8 = -1.35
    # loss = 2 * (0.5 * -0.9/4 + 0.5 * -1.35/10) = 2 * (-0.1125 - 0.0675) = -0.36
    torch.testing.assert_close(loss, torch.tensor(-0.36, dtype=DTYPE), rtol=0, atol=1e-12)
    loss.backward()
    # row 0: 2 * 0.5/4 * [-1/3, 0, -1/6] = [-1/12, 0, -1/24]; row 1: 2 * 0.5/10 * [2.2, 1.6, 0] = [0.22, 0.16, 0]
    expected_grad = torch.tensor([[-1 / 12, 0.0, -1 / 24], [0.22, 0.16, 0.0]], dtype=DTYPE)
    torch.testing.assert_close(log_prob.grad, expected_grad, rtol=0, atol=1e-12)
    # upstream: -0.9/4; downstream: -1.35/10; PPO clip active on 1 of 3 upstream tokens (r = 1.5, A > 0);
    # CISPO weight clipped on 1 of 2 downstream tokens (r = 0.7 < 0.8); ratios (1 + 1.5 + 0.5 + 1.1 + 0.7)/5
    assert metrics == pytest.approx(
        {
            "upstream": -0.225,
            "downstream": -0.135,
            "upstream_clipfrac": 1 / 3,
            "downstream_clipfrac": 0.5,
            "ratio_mean": 0.96,
            # per-token weights before scale: 0.5 / (3 tokens x 4 rows), 0.5 / 10 tokens
            "upstream_token_weight": 1 / 24,
            "downstream_token_weight": 0.05,
            # 3 upstream tokens x 1/24 = 0.125 against 2 downstream tokens x 0.05 = 0.1
            "upstream_weight_share": 0.125 / 0.225,
            # the gradient w.r.t. log pi above, before scale: |[-1/24, 0, -1/48]|, |[0.11, 0.08]|
            "upstream_grad_norm": 5**0.5 / 48,
            "downstream_grad_norm": 0.0185**0.5,
        },
        abs=1e-12,
    )
    assert all(type(value) is float for value in metrics.values())


def test_skpo_loss_micro_batches_add_up_to_the_mini_batch_loss():
    log_prob, old_log_prob, adv, mask, is_upstream = _skpo_case()
    counts = dict(upstream_rows=1, downstream_tokens=2)
    whole, _ = _skpo_loss(log_prob, old_log_prob, adv, mask, is_upstream, **counts)
    # the caller passes the same global counts to each micro-batch (here: one row each)
    first, _ = _skpo_loss(log_prob[:1], old_log_prob[:1], adv[:1], mask[:1], is_upstream[:1], **counts)
    second, _ = _skpo_loss(log_prob[1:], old_log_prob[1:], adv[1:], mask[1:], is_upstream[1:], **counts)
    torch.testing.assert_close(first + second, whole, rtol=0, atol=1e-12)


def test_skpo_loss_with_one_role_absent_counts_only_the_other():
    log_prob, old_log_prob, adv, mask, _ = _skpo_case()
    all_downstream = torch.tensor([False, False])
    loss, metrics = _skpo_loss(log_prob, old_log_prob, adv, mask, all_downstream, upstream_rows=0, downstream_tokens=5)
    # downstream sums: row 0 0.5 + 1.28 + 1.6 = 3.38, row 1 -1.35 -> 2.03/5 = 0.406; loss = 0.5 * 0.406
    torch.testing.assert_close(loss, torch.tensor(0.203, dtype=DTYPE), rtol=0, atol=1e-12)
    assert metrics["upstream"] == 0.0 and metrics["upstream_clipfrac"] == 0.0


def test_skpo_loss_micro_batch_of_padding_gives_zero_with_a_working_backward():
    log_prob, old_log_prob, adv, _, is_upstream = _skpo_case()
    empty = torch.zeros(2, 3, dtype=DTYPE)
    loss, metrics = _skpo_loss(log_prob, old_log_prob, adv, empty, is_upstream, upstream_rows=0, downstream_tokens=0)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(log_prob.grad == 0)
    assert set(metrics) == {
        "upstream",
        "downstream",
        "upstream_clipfrac",
        "downstream_clipfrac",
        "ratio_mean",
        "upstream_token_weight",
        "downstream_token_weight",
        "upstream_weight_share",
        "upstream_grad_norm",
        "downstream_grad_norm",
    }
    assert all(value == 0.0 for value in metrics.values())


def test_skpo_loss_upstream_row_without_tokens_is_not_counted():
    log_prob, old_log_prob, adv, mask, is_upstream = _skpo_case()
    mask[0] = 0  # the upstream row has no response tokens: upstream_rows = 0 is consistent
    loss, _ = _skpo_loss(log_prob, old_log_prob, adv, mask, is_upstream, upstream_rows=0, downstream_tokens=2)
    # 0.5 * -1.35/2
    torch.testing.assert_close(loss, torch.tensor(-0.3375, dtype=DTYPE), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "normalisers, missing",
    [
        (dict(upstream_rows=0, downstream_tokens=2), "upstream_rows=0"),
        (dict(upstream_rows=1, downstream_tokens=0), "downstream_tokens=0"),
        (dict(upstream_rows=1, downstream_tokens=2, upstream_tokens=0, aggregation="token_mean"), "upstream_tokens=0"),
        (dict(upstream_rows=-1, downstream_tokens=2), "upstream_rows=-1"),
    ],
)
def test_skpo_loss_refuses_a_zero_normaliser_where_the_micro_batch_has_rows_of_its_kind(normalisers, missing):
    with pytest.raises(ValueError, match=missing):
        _skpo_loss(*_skpo_case(), **normalisers)


def test_a_mini_batch_share_of_the_step_counts_may_be_below_a_micro_batchs_own_count():
    # Step counts over M mini-batches (e.g. 3 upstream rows over 4 mini-batches = 0.75) are no bug: a
    # mini-batch dealt more than its share of upstream rows still gives each the same weight.
    loss, metrics = _skpo_loss(*_skpo_case(), upstream_rows=0.75, downstream_tokens=1.5)
    # 0.5 * -0.9 / 0.75 + 0.5 * -1.35 / 1.5 = -0.6 - 0.45
    torch.testing.assert_close(loss, torch.tensor(-1.05, dtype=DTYPE), rtol=0, atol=1e-12)
    assert metrics["upstream_token_weight"] == pytest.approx(0.5 / (3 * 0.75), abs=1e-12)


def test_token_mean_gives_every_response_token_the_same_weight():
    log_prob, old_log_prob, adv, mask, is_upstream = _skpo_case()
    loss, metrics = _skpo_loss(
        log_prob,
        old_log_prob,
        adv,
        mask,
        is_upstream,
        upstream_rows=1,
        upstream_tokens=3,
        downstream_tokens=2,
        aggregation="token_mean",
    )
    # upstream token losses [-1, -1.2, -0.5] (sum -2.7, not the row mean), downstream [-0.55, -0.8]:
    # 0.5 * (-2.7 - 1.35) / (3 + 2) = -0.405
    torch.testing.assert_close(loss, torch.tensor(-0.405, dtype=DTYPE), rtol=0, atol=1e-12)
    loss.backward()
    # every token 0.5 / 5 = 0.1: upstream -r A where unclipped [-1, 0, -0.5]; downstream -w A [2.2, 1.6]
    expected_grad = torch.tensor([[-0.1, 0.0, -0.05], [0.22, 0.16, 0.0]], dtype=DTYPE)
    torch.testing.assert_close(log_prob.grad, expected_grad, rtol=0, atol=1e-12)
    assert metrics["upstream_token_weight"] == pytest.approx(0.1) and metrics["downstream_token_weight"] == 0.1
    assert metrics["upstream_weight_share"] == pytest.approx(3 / 5)
    assert metrics["upstream"] == pytest.approx(-2.7 / 5) and metrics["downstream"] == pytest.approx(-1.35 / 5)


def test_skpo_loss_rejects_a_role_vector_of_the_wrong_length():
    log_prob, old_log_prob, adv, mask, _ = _skpo_case()
    with pytest.raises(ValueError, match="is_upstream"):
        _skpo_loss(log_prob, old_log_prob, adv, mask, torch.tensor([True]), upstream_rows=1, downstream_tokens=2)
