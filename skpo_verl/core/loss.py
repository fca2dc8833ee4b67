"""SKPO's asymmetric policy loss (docs/algorithm.md, Loss). torch, pure and differentiable.

Upstream rows (prompt q, segment s) use the standard PPO clip, averaged per sequence;
downstream rows (prompt [s, q], answer o_i) use CISPO's clipped, stop-gradient importance
weight on log pi, summed per token. No KL penalty, no entropy bonus.

Shapes: B rows, T response tokens. `mask` is the response mask with 0/1 entries.
"""

from __future__ import annotations

import torch

# verl's own policy losses clamp log(pi / pi_old) to this range before exp (core_algos),
# so that a stale or padded log-prob cannot overflow the ratio to inf.
_LOG_RATIO_BOUND = 20.0


def _ratio(log_prob: torch.Tensor, old_log_prob: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """r_t = exp(log pi - log pi_old) on response tokens, 1 elsewhere (padding may hold any value)."""
    log_ratio = torch.where(mask, log_prob - old_log_prob, torch.zeros_like(log_prob))
    return torch.exp(torch.clamp(log_ratio, -_LOG_RATIO_BOUND, _LOG_RATIO_BOUND))


def _ppo_token_losses(ratio: torch.Tensor, advantages: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(-min(r A, clip(r, 1-eps, 1+eps) A), whether the clipped term is the active one), [B, T]."""
    unclipped = -ratio * advantages
    clipped = -torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * advantages
    return torch.maximum(unclipped, clipped), clipped > unclipped


def upstream_ppo_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float,
) -> torch.Tensor:
    """Per-sequence PPO-clip loss of upstream rows.

        L_b = -(1/|o_b|) sum_t min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t),
        r_t = exp(log pi(o_t) - log pi_old(o_t)),

    the mean over the row's response tokens; a row with no response tokens gives 0.

    Args:
        log_prob, old_log_prob, advantages, mask: [B, T].
        clip: eps (paper: 0.2).
    Returns:
        L, [B].
    """
    mask = mask.bool()
    token_losses, _ = _ppo_token_losses(_ratio(log_prob, old_log_prob, mask), advantages, clip)
    token_losses = torch.where(mask, token_losses, torch.zeros_like(token_losses))
    tokens = mask.sum(dim=-1).clamp(min=1).to(token_losses.dtype)
    return token_losses.sum(dim=-1) / tokens


def downstream_cispo_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float,
    clip_high: float,
) -> torch.Tensor:
    """Per-token CISPO loss of downstream rows.

        L_t = -sg(clip(r_t, 1 - eps_low, 1 + eps_high)) * A_t * log pi(o_t),

    so grad L_t = -clip(r_t) A_t grad log pi(o_t): the weight is a constant, and unlike PPO
    no token loses its gradient to clipping. Tokens outside the mask give 0.

    Args:
        log_prob, old_log_prob, advantages, mask: [B, T].
        clip_low, clip_high: eps_low, eps_high (paper: 0.2, 0.28).
    Returns:
        L, [B, T].
    """
    mask = mask.bool()
    weight = torch.clamp(_ratio(log_prob, old_log_prob, mask), 1.0 - clip_low, 1.0 + clip_high).detach()
    token_losses = -weight * advantages * log_prob
    return torch.where(mask, token_losses, torch.zeros_like(token_losses))


def skpo_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    is_upstream: torch.Tensor,
    *,
    upstream_rows: int,
    downstream_tokens: int,
    upstream_weight: float,
    downstream_weight: float,
    upstream_clip: float,
    downstream_clip_low: float,
    downstream_clip_high: float,
    scale: float = 1.0,
) -> torch.Tensor:
    """This micro-batch's share of SKPO's mini-batch loss.

        loss = scale * ( w_up   * sum_{upstream rows b}       L_up_b     / upstream_rows
                       + w_down * sum_{downstream tokens b,t} L_down_b,t / downstream_tokens )

    `upstream_rows` (upstream rows with at least one response token) and
    `downstream_tokens` are counts over the whole mini-batch, all micro-batches and
    data-parallel ranks, so the micro-batch losses add up to the mini-batch means. A count
    of 0 makes that term 0. `skpo_loss_diagnostics` reports on the same inputs.

    Args:
        log_prob, old_log_prob, advantages, mask: [B, T].
        is_upstream: bool [B], the row's role.
        upstream_rows, downstream_tokens: global normalisers, >= 0.
        upstream_weight, downstream_weight: w_up, w_down (paper: 0.5, 0.5).
        upstream_clip: PPO eps of the upstream term (paper: 0.2).
        downstream_clip_low, downstream_clip_high: CISPO weight bounds (paper: 0.2, 0.28).
        scale: multiplies the loss, e.g. the data-parallel size when gradients are averaged
            over ranks.
    Returns:
        loss, scalar, differentiable.
    """
    _check_roles(log_prob, mask, is_upstream, upstream_rows, downstream_tokens)
    upstream, downstream = _role_terms(
        log_prob,
        old_log_prob,
        advantages,
        mask.bool(),
        is_upstream.bool(),
        upstream_rows,
        downstream_tokens,
        upstream_clip,
        downstream_clip_low,
        downstream_clip_high,
    )
    return scale * (upstream_weight * upstream + downstream_weight * downstream)


def _check_roles(log_prob, mask, is_upstream, upstream_rows: int, downstream_tokens: int) -> None:
    if is_upstream.shape != log_prob.shape[:1]:
        raise ValueError(f"is_upstream has shape {tuple(is_upstream.shape)}, expected ({log_prob.shape[0]},).")
    mask, is_upstream = mask.bool(), is_upstream.bool()
    local_up_rows = int(mask[is_upstream].any(dim=-1).sum())
    local_down_tokens = int(mask[~is_upstream].sum())
    # The global counts include this micro-batch, so a smaller one is a caller bug that
    # would silently inflate the loss (or divide by zero).
    if local_up_rows > upstream_rows or local_down_tokens > downstream_tokens:
        raise ValueError(
            f"Global counts upstream_rows={upstream_rows}, downstream_tokens={downstream_tokens} are smaller than "
            f"this micro-batch's own ({local_up_rows} upstream rows, {local_down_tokens} downstream tokens)."
        )


def _role_terms(
    log_prob, old_log_prob, advantages, mask, up, upstream_rows, downstream_tokens, clip, clip_low, clip_high
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum L_up / upstream_rows, sum L_down / downstream_tokens), each evaluated on its own rows only.

    A global count of 0 implies no local rows of that role, so the sum is an exact 0 that
    stays attached to the graph (backward works even on a micro-batch of padding).
    """
    down = ~up
    per_row = upstream_ppo_loss(log_prob[up], old_log_prob[up], advantages[up], mask[up], clip)
    per_token = downstream_cispo_loss(
        log_prob[down], old_log_prob[down], advantages[down], mask[down], clip_low, clip_high
    )
    return per_row.sum() / max(upstream_rows, 1), per_token.sum() / max(downstream_tokens, 1)


@torch.no_grad()
def skpo_loss_diagnostics(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    is_upstream: torch.Tensor,
    *,
    upstream_rows: int,
    downstream_tokens: int,
    upstream_weight: float,
    downstream_weight: float,
    upstream_clip: float,
    downstream_clip_low: float,
    downstream_clip_high: float,
) -> dict[str, float]:
    """What `skpo_loss` did on this micro-batch (same arguments, without `scale`), as python floats.

    upstream / downstream: the two terms' shares before weights and scale;
    upstream_clipfrac: fraction of upstream tokens whose PPO clip is active;
    downstream_clipfrac: fraction of downstream tokens whose weight was clipped;
    ratio_mean: mean r_t over all response tokens (0 when there are none);
    upstream_token_weight / downstream_token_weight: the mean weight one token of each term
        carries in the loss, w_up / (|s_b| upstream_rows) and w_down / downstream_tokens
        (before `scale`);
    upstream_grad_norm / downstream_grad_norm: each term's share of the update, as the L2
        norm of its gradient with respect to this micro-batch's token log-probs (closed form,
        no extra backward pass; a proxy for the parameter-gradient norms, which would need
        one backward pass per term).
    """
    mask, up = mask.bool(), is_upstream.bool()
    down = ~up
    upstream, downstream = _role_terms(
        log_prob,
        old_log_prob,
        advantages,
        mask,
        up,
        upstream_rows,
        downstream_tokens,
        upstream_clip,
        downstream_clip_low,
        downstream_clip_high,
    )
    up_ratio = _ratio(log_prob[up], old_log_prob[up], mask[up])
    down_ratio = _ratio(log_prob[down], old_log_prob[down], mask[down])
    _, ppo_clipped = _ppo_token_losses(up_ratio, advantages[up], upstream_clip)
    down_weight = torch.clamp(down_ratio, 1.0 - downstream_clip_low, 1.0 + downstream_clip_high)
    weight_clipped = (down_ratio < 1.0 - downstream_clip_low) | (down_ratio > 1.0 + downstream_clip_high)
    tokens = int(mask.sum())
    ratio_sum = float((up_ratio * mask[up]).sum() + (down_ratio * mask[down]).sum())
    up_lengths = mask[up].sum(dim=-1, keepdim=True).clamp(min=1).to(log_prob.dtype)
    up_token_weight = upstream_weight / (up_lengths * max(upstream_rows, 1))
    down_token_weight = downstream_weight / max(downstream_tokens, 1)
    # d(term)/d(log pi_t): PPO's unclipped branch -r A (0 where the clip is active); CISPO's -clip(r) A.
    up_grad = torch.where(ppo_clipped | ~mask[up], 0.0, -up_ratio * advantages[up]) * up_token_weight
    down_grad = torch.where(mask[down], -down_weight * advantages[down], 0.0) * down_token_weight
    return {
        "upstream": float(upstream),
        "downstream": float(downstream),
        "upstream_clipfrac": _masked_mean(ppo_clipped, mask[up]),
        "downstream_clipfrac": _masked_mean(weight_clipped, mask[down]),
        "ratio_mean": ratio_sum / tokens if tokens else 0.0,
        "upstream_token_weight": _masked_mean(up_token_weight.expand_as(mask[up]), mask[up]),
        "downstream_token_weight": down_token_weight if mask[down].any() else 0.0,
        "upstream_grad_norm": float(up_grad.double().norm()),
        "downstream_grad_norm": float(down_grad.double().norm()),
    }


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of `values` over the mask's tokens, 0.0 when the mask is empty."""
    tokens = int(mask.sum())
    return float((values.to(torch.float64) * mask).sum() / tokens) if tokens else 0.0
