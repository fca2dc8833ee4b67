"""The `skpo` policy loss (docs/algorithm.md, Loss), registered as `actor.policy_loss.loss_mode=skpo`.

verl's `ppo_loss` (workers/utils/losses.py) hands a registered loss only
`old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
rollout_is_weights` — not which rows are upstream. The shim
`skpo_verl.patches.ppo_loss_roles` wraps that real `ppo_loss` and publishes, for the
micro-batch it is computing, the rows' roles, the mini-batch-wide role counts and the loss
hyperparameters through `micro_batch_roles`, which this loss reads.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from skpo_verl.config import LossConfig
from skpo_verl.core.loss import skpo_loss, skpo_loss_diagnostics


@dataclass(frozen=True)
class MicroBatchRoles:
    is_upstream: torch.Tensor  # bool [B], rows of the current micro-batch
    upstream_rows: int  # upstream rows with response tokens in the whole mini-batch, all DP ranks
    downstream_tokens: int  # downstream response tokens in the whole mini-batch, all DP ranks
    loss: LossConfig


_current: contextvars.ContextVar[MicroBatchRoles | None] = contextvars.ContextVar("skpo_roles", default=None)


@contextlib.contextmanager
def micro_batch_roles(roles: MicroBatchRoles) -> Iterator[None]:
    token = _current.set(roles)
    try:
        yield
    finally:
        _current.reset(token)


def skpo_policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config=None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """Upstream PPO-clip (per-sequence mean) + downstream clipped-IS (token sum), weighted.

    `loss_agg_mode` is not used: SKPO's two terms have their own normalisation (upstream
    rows and downstream tokens of the global mini-batch). The result is multiplied by the
    data-parallel size because verl's FSDP averages gradients over ranks.
    """
    roles = _current.get()
    if roles is None:
        raise RuntimeError(
            "actor.policy_loss.loss_mode=skpo was called outside skpo_verl's ppo_loss shim, so the rows' roles are "
            "unknown. Use verl 0.9.1's engine workers (the default) with skpo-verl installed on every node, and "
            "check the worker logs for '[skpo_verl] ERROR' lines."
        )
    if rollout_is_weights is not None:
        raise RuntimeError(
            "SKPO's loss does not apply rollout-correction importance weights; unset algorithm.rollout_correction."
        )
    if roles.is_upstream.shape[0] != log_prob.shape[0]:
        raise RuntimeError(
            f"SKPO role vector has {roles.is_upstream.shape[0]} rows but the micro-batch has {log_prob.shape[0]}."
        )
    dp_size = 1
    if config is not None and getattr(config, "global_batch_info", None):
        dp_size = int(config.global_batch_info.get("dp_size", 1) or 1)
    loss_cfg = roles.loss
    inputs = (
        log_prob,
        old_log_prob,
        advantages,
        response_mask,
        roles.is_upstream.to(device=log_prob.device, dtype=torch.bool),
    )
    settings = dict(
        upstream_rows=roles.upstream_rows,
        downstream_tokens=roles.downstream_tokens,
        upstream_weight=loss_cfg.upstream_weight,
        downstream_weight=loss_cfg.downstream_weight,
        upstream_clip=loss_cfg.upstream_clip,
        downstream_clip_low=loss_cfg.downstream_clip_low,
        downstream_clip_high=loss_cfg.downstream_clip_high,
    )
    loss = skpo_loss(*inputs, **settings, scale=float(dp_size))
    diagnostics = skpo_loss_diagnostics(*inputs, **settings)
    return loss, {f"skpo/loss/{name}": value for name, value in diagnostics.items()}
