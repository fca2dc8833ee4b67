"""The `skpo` policy loss (docs/algorithm.md, Loss), registered as `actor.policy_loss.loss_mode=skpo`.

verl's `ppo_loss` (workers/utils/losses.py) hands a registered loss only
`old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
rollout_is_weights` — not which rows are upstream. The shim
`skpo_verl.patches.ppo_loss_roles` wraps that real `ppo_loss` and publishes, for the
micro-batch it is computing, the rows' roles, the loss normalisers and the loss
hyperparameters through `micro_batch_roles`, which this loss reads.

Normalisers, the same for every mini-batch of a step (docs/algorithm.md, "Mini-batches and
ranks"): the driver counts the step's upstream rows U, upstream tokens and downstream tokens D,
and each mini-batch divides by its share of them, 1/M of the step for M mini-batches. Every
upstream row then weighs w_up M / U and every downstream token w_down M / D in its mini-batch,
whichever mini-batch and rank verl's `_balance_batch` deals it to; with whole prompts in every
mini-batch these are the paper's per-mini-batch means exactly (w_up / (U / M)).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields

import torch

from skpo_verl.config import LossConfig
from skpo_verl.core.loss import skpo_loss, skpo_loss_diagnostics


@dataclass(frozen=True)
class LossNormalisers:
    """What one mini-batch divides each term by: the step's counts times the mini-batch's share, 1/M."""

    upstream_rows: float
    upstream_tokens: float
    downstream_tokens: float

    @classmethod
    def for_mini_batches(cls, step_counts: Mapping[str, int], mini_batches: int) -> LossNormalisers:
        """`step_counts` over the whole step (`step_role_counts`), shared by `mini_batches` equal mini-batches."""
        if mini_batches < 1:
            raise ValueError(f"a step has at least one mini-batch, got {mini_batches}")
        return cls(
            **{
                name: step_counts[name] / mini_batches
                for name in ("upstream_rows", "upstream_tokens", "downstream_tokens")
            }
        )

    @classmethod
    def from_shipped(cls, shipped: Mapping) -> LossNormalisers:
        return cls(**_exact_fields(cls, shipped, "skpo_loss_normalisers"))


def step_role_counts(upstream_mask: torch.Tensor, response_mask: torch.Tensor) -> dict[str, int]:
    """Upstream rows with response tokens, upstream tokens and downstream tokens of a batch.

    response_mask may be nested ([B, j]) or padded ([B, T]); padding rows have no tokens.
    """
    if response_mask.is_nested:
        tokens = torch.stack([row.sum() for row in response_mask.unbind()])
    else:
        tokens = response_mask.sum(dim=-1)
    tokens = tokens.to(torch.int64).cpu()
    upstream = upstream_mask.bool().cpu()
    return {
        "upstream_rows": int((upstream & (tokens > 0)).sum()),
        "upstream_tokens": int(tokens[upstream].sum()),
        "downstream_tokens": int(tokens[~upstream].sum()),
    }


def loss_config_from_shipped(shipped: Mapping) -> LossConfig:
    """The driver's `algorithm.skpo.loss`, as shipped in the batch: every field, nothing defaulted."""
    return LossConfig(**_exact_fields(LossConfig, shipped, "skpo_loss"))


def _exact_fields(cls, shipped: Mapping, entry: str) -> dict:
    """`shipped` must hold exactly `cls`'s fields: a missing one would fall back to a default unnoticed."""
    names = {f.name for f in fields(cls)}
    missing, unknown = sorted(names - set(shipped)), sorted(set(shipped) - names)
    if missing or unknown:
        raise RuntimeError(
            f"The micro-batch's '{entry}' entry lacks {missing} / has unknown {unknown}: the driver and the actor "
            "workers run different skpo-verl versions. Install the same skpo-verl on every node."
        )
    return dict(shipped)


@dataclass(frozen=True)
class MicroBatchRoles:
    is_upstream: torch.Tensor  # bool [B], rows of the current micro-batch
    normalisers: LossNormalisers
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
    """Upstream PPO-clip + downstream clipped-IS, weighted and normalised as `algorithm.skpo.loss` says.

    `loss_agg_mode` is not used: SKPO's terms have their own normalisation (`LossNormalisers`,
    `algorithm.skpo.loss.aggregation`). The result is multiplied by the data-parallel size because
    verl's FSDP averages gradients over ranks.
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
    loss_cfg, normalisers = roles.loss, roles.normalisers
    inputs = (
        log_prob,
        old_log_prob,
        advantages,
        response_mask,
        roles.is_upstream.to(device=log_prob.device, dtype=torch.bool),
    )
    settings = dict(
        upstream_rows=normalisers.upstream_rows,
        upstream_tokens=normalisers.upstream_tokens,
        downstream_tokens=normalisers.downstream_tokens,
        upstream_weight=loss_cfg.upstream_weight,
        downstream_weight=loss_cfg.downstream_weight,
        upstream_clip=loss_cfg.upstream_clip,
        downstream_clip_low=loss_cfg.downstream_clip_low,
        downstream_clip_high=loss_cfg.downstream_clip_high,
        aggregation=loss_cfg.aggregation,
    )
    loss = skpo_loss(*inputs, **settings, scale=float(dp_size))
    diagnostics = skpo_loss_diagnostics(*inputs, **settings)
    return loss, {f"skpo/loss/{name}": value for name, value in diagnostics.items()}
