"""SKPO's asymmetric policy loss (docs/algorithm.md, Loss). torch, pure and differentiable.

Upstream rows (prompt q, segment s) use the standard PPO clip, averaged per sequence;
downstream rows (prompt [s, q], answer o_i) use CISPO's clipped, stop-gradient importance
weight on log pi, summed per token. No KL penalty, no entropy bonus.

Shapes: B rows, T response tokens. `mask` is the response mask with 0/1 entries.
"""

from __future__ import annotations

from typing import NamedTuple

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


def upstream_ppo_token_losses(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float,
) -> torch.Tensor:
    """PPO-clip per upstream token, 0 outside the mask.

        L_t = -min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t),   r_t = exp(log pi(o_t) - log pi_old(o_t))

    Args:
        log_prob, old_log_prob, advantages, mask: [B, T].
        clip: eps (paper: 0.2).
    Returns:
        L, [B, T].
    """
    mask = mask.bool()
    token_losses, _ = _ppo_token_losses(_ratio(log_prob, old_log_prob, mask), advantages, clip)
    return torch.where(mask, token_losses, torch.zeros_like(token_losses))


def upstream_ppo_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float,
) -> torch.Tensor:
    """Per-sequence PPO-clip loss of upstream rows (Eq. 6).

        L_b = (1/|o_b|) sum_t L_t   (`upstream_ppo_token_losses`),

    the mean over the row's response tokens; a row with no response tokens gives 0.

    Args:
        log_prob, old_log_prob, advantages, mask: [B, T].
        clip: eps (paper: 0.2).
    Returns:
        L, [B].
    """
    token_losses = upstream_ppo_token_losses(log_prob, old_log_prob, advantages, mask, clip)
    tokens = mask.bool().sum(dim=-1).clamp(min=1).to(token_losses.dtype)
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
    upstream_rows: float,
    upstream_tokens: float,
    downstream_tokens: float,
    upstream_weight: float,
    downstream_weight: float,
    upstream_clip: float,
    downstream_clip_low: float,
    downstream_clip_high: float,
    aggregation: str = "per_role",
    scale: float = 1.0,
) -> torch.Tensor:
    """This micro-batch's share of SKPO's mini-batch loss.

    aggregation="per_role" (Eq. 6, the paper):

        loss = scale * ( w_up   * sum_{upstream rows b}       L_up_b     / upstream_rows
                       + w_down * sum_{downstream tokens b,t} L_down_b,t / downstream_tokens )

    with L_up_b the row's per-sequence mean (`upstream_ppo_loss`). aggregation="token_mean" (ours,
    Appendix C read literally):

        loss = scale * ( w_up   * sum_{upstream tokens b,t}   L_up_b,t
                       + w_down * sum_{downstream tokens b,t} L_down_b,t ) / (upstream_tokens + downstream_tokens)

    The normalisers are the mini-batch's: the caller passes the same numbers to every micro-batch
    (all micro-batches and data-parallel ranks) so that the micro-batch losses add up to the
    mini-batch loss. Upstream rows count only with at least one response token. A normaliser of 0
    is allowed only where this micro-batch has nothing of that kind. `skpo_loss_diagnostics`
    reports on the same inputs.

    Args:
        log_prob, old_log_prob, advantages, mask: [B, T].
        is_upstream: bool [B], the row's role.
        upstream_rows, upstream_tokens, downstream_tokens: the normalisers, >= 0.
        upstream_weight, downstream_weight: w_up, w_down (paper: 0.5, 0.5).
        upstream_clip: PPO eps of the upstream term (paper: 0.2).
        downstream_clip_low, downstream_clip_high: CISPO weight bounds (paper: 0.2, 0.28).
        aggregation: "per_role" or "token_mean".
        scale: multiplies the loss, e.g. the data-parallel size when gradients are averaged
            over ranks.
    Returns:
        loss, scalar, differentiable.
    """
    terms = _role_terms(
        log_prob,
        old_log_prob,
        advantages,
        mask,
        is_upstream,
        (upstream_rows, upstream_tokens, downstream_tokens),
        aggregation,
        (upstream_clip, downstream_clip_low, downstream_clip_high),
    )
    return scale * (upstream_weight * terms.upstream + downstream_weight * terms.downstream)


class _RoleTerms(NamedTuple):
    upstream: torch.Tensor  # the upstream term before its weight
    downstream: torch.Tensor  # the downstream term before its weight
    up_token_share: torch.Tensor  # [U_local, 1]: the share of the upstream term one token of each row carries
    down_token_share: float  # the share of the downstream term one downstream token carries
    up_ratio: torch.Tensor
    down_ratio: torch.Tensor
    up_mask: torch.Tensor
    down_mask: torch.Tensor


def _role_terms(log_prob, old_log_prob, advantages, mask, is_upstream, normalisers, aggregation, clips) -> _RoleTerms:
    """Both terms, each evaluated on its own rows only, normalised as `aggregation` says.

    A normaliser of 0 implies no local rows of that role (checked), so a sum over none is an exact
    0 that stays attached to the graph (backward works even on a micro-batch of padding).
    """
    if is_upstream.shape != log_prob.shape[:1]:
        raise ValueError(f"is_upstream has shape {tuple(is_upstream.shape)}, expected ({log_prob.shape[0]},).")
    if aggregation not in ("per_role", "token_mean"):
        raise ValueError(f"Unknown SKPO loss aggregation {aggregation!r}; expected per_role or token_mean.")
    mask, up = mask.bool(), is_upstream.bool()
    down = ~up
    upstream_rows, upstream_tokens, downstream_tokens = normalisers
    clip, clip_low, clip_high = clips
    _check_normalisers(mask[up], mask[down], upstream_rows, upstream_tokens, downstream_tokens, aggregation)
    up_losses = upstream_ppo_token_losses(log_prob[up], old_log_prob[up], advantages[up], mask[up], clip)
    down_losses = downstream_cispo_loss(
        log_prob[down], old_log_prob[down], advantages[down], mask[down], clip_low, clip_high
    )
    lengths = mask[up].sum(dim=-1, keepdim=True).clamp(min=1).to(log_prob.dtype)
    if aggregation == "per_role":
        up_token_share = 1.0 / (lengths * max(upstream_rows, 1e-12))
        down_token_share = 1.0 / max(downstream_tokens, 1e-12)
    else:
        all_tokens = max(upstream_tokens + downstream_tokens, 1e-12)
        up_token_share = torch.full_like(lengths, 1.0 / all_tokens)
        down_token_share = 1.0 / all_tokens
    return _RoleTerms(
        upstream=(up_losses * up_token_share).sum(),
        downstream=down_losses.sum() * down_token_share,
        up_token_share=up_token_share,
        down_token_share=down_token_share,
        up_ratio=_ratio(log_prob[up], old_log_prob[up], mask[up]),
        down_ratio=_ratio(log_prob[down], old_log_prob[down], mask[down]),
        up_mask=mask[up],
        down_mask=mask[down],
    )


def _check_normalisers(up_mask, down_mask, upstream_rows, upstream_tokens, downstream_tokens, aggregation) -> None:
    """A normaliser of 0 with local rows of its kind would silently zero (or blow up) a term: a caller bug."""
    local = {
        "upstream_rows": (int(up_mask.any(dim=-1).sum()), upstream_rows),
        "upstream_tokens": (int(up_mask.sum()), upstream_tokens),
        "downstream_tokens": (int(down_mask.sum()), downstream_tokens),
    }
    if aggregation == "per_role":
        del local["upstream_tokens"]
    for name, (count, normaliser) in local.items():
        if normaliser < 0 or (count > 0 and normaliser <= 0):
            raise ValueError(
                f"SKPO loss normaliser {name}={normaliser} with {count} {name.replace('_', ' ')} in this micro-batch: "
                "the driver's per-step counts did not arrive (skpo_verl.patches.trainer_v1._update_actor sends them)."
            )


@torch.no_grad()
def skpo_loss_diagnostics(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    is_upstream: torch.Tensor,
    *,
    upstream_rows: float,
    upstream_tokens: float,
    downstream_tokens: float,
    upstream_weight: float,
    downstream_weight: float,
    upstream_clip: float,
    downstream_clip_low: float,
    downstream_clip_high: float,
    aggregation: str = "per_role",
) -> dict[str, float]:
    """What `skpo_loss` did on this micro-batch (same arguments, without `scale`), as python floats.

    upstream / downstream: the two terms before weights and scale;
    upstream_clipfrac: fraction of upstream tokens whose PPO clip is active;
    downstream_clipfrac: fraction of downstream tokens whose weight was clipped;
    ratio_mean: mean r_t over all response tokens (0 when there are none);
    upstream_token_weight / downstream_token_weight: the mean weight one token of each role
        carries in the loss (before `scale`): per_role w_up / (|s_b| upstream_rows) and
        w_down / downstream_tokens; token_mean w_up / N and w_down / N, N all tokens;
    upstream_weight_share: the upstream tokens' part of this micro-batch's summed token weights
        (0.5 per_role with equal weights and a whole mini-batch; tokens' share with token_mean);
    upstream_grad_norm / downstream_grad_norm: each term's share of the update, as the L2
        norm of its gradient with respect to this micro-batch's token log-probs (closed form,
        no extra backward pass; a proxy for the parameter-gradient norms, which would need
        one backward pass per term).
    """
    terms = _role_terms(
        log_prob,
        old_log_prob,
        advantages,
        mask,
        is_upstream,
        (upstream_rows, upstream_tokens, downstream_tokens),
        aggregation,
        (upstream_clip, downstream_clip_low, downstream_clip_high),
    )
    up_mask, down_mask = terms.up_mask, terms.down_mask
    up, down = is_upstream.bool(), ~is_upstream.bool()
    _, ppo_clipped = _ppo_token_losses(terms.up_ratio, advantages[up], upstream_clip)
    down_weight = torch.clamp(terms.down_ratio, 1.0 - downstream_clip_low, 1.0 + downstream_clip_high)
    weight_clipped = (terms.down_ratio < 1.0 - downstream_clip_low) | (terms.down_ratio > 1.0 + downstream_clip_high)
    tokens = int(up_mask.sum() + down_mask.sum())
    ratio_sum = float((terms.up_ratio * up_mask).sum() + (terms.down_ratio * down_mask).sum())
    up_token_weight = upstream_weight * terms.up_token_share
    down_token_weight = downstream_weight * terms.down_token_share
    up_weight_sum = float((up_token_weight * up_mask).sum())
    down_weight_sum = down_token_weight * int(down_mask.sum())
    # d(term)/d(log pi_t): PPO's unclipped branch -r A (0 where the clip is active); CISPO's -clip(r) A.
    up_grad = torch.where(ppo_clipped | ~up_mask, 0.0, -terms.up_ratio * advantages[up]) * up_token_weight
    down_grad = torch.where(down_mask, -down_weight * advantages[down], 0.0) * down_token_weight
    return {
        "upstream": float(terms.upstream),
        "downstream": float(terms.downstream),
        "upstream_clipfrac": _masked_mean(ppo_clipped, up_mask),
        "downstream_clipfrac": _masked_mean(weight_clipped, down_mask),
        "ratio_mean": ratio_sum / tokens if tokens else 0.0,
        "upstream_token_weight": _masked_mean(up_token_weight.expand_as(up_mask), up_mask),
        "downstream_token_weight": down_token_weight if down_mask.any() else 0.0,
        "upstream_weight_share": up_weight_sum / (up_weight_sum + down_weight_sum) if tokens else 0.0,
        "upstream_grad_norm": float(up_grad.double().norm()),
        "downstream_grad_norm": float(down_grad.double().norm()),
    }


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of `values` over the mask's tokens, 0.0 when the mask is empty."""
    tokens = int(mask.sum())
    return float((values.to(torch.float64) * mask).sum() / tokens) if tokens else 0.0
