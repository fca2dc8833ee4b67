"""Shim: let the `skpo` policy loss see each row's role inside verl 0.9.1's `ppo_loss`.

Adapts `verl/workers/utils/losses.py::ppo_loss`, which selects only `response_mask,
old_log_probs, advantages[, rollout_is_weights, ref_log_prob]` before calling the
registered policy loss, and `verl/workers/engine_workers.py` (l.643), which binds
`partial(ppo_loss, config=actor_config)` from its module namespace. We replace that name
with a wrapper that publishes the micro-batch's `skpo_upstream_mask` column, the
mini-batch role counts (added by `engine_role_counts`) and the loss hyperparameters (sent
by the driver in the batch's extra info), then calls verl's real `ppo_loss` whole. Batches
without the column (any other estimator) pass straight through; nothing of verl's is
dropped. With distillation on, verl binds `distillation_ppo_loss` instead (l.640): the `skpo`
loss then finds no roles and stops the run with that message.
"""

from __future__ import annotations

import functools

from skpo_verl.patches.wrapping import is_wrapped, wrap
from skpo_verl.rows import DOWNSTREAM_TOKENS, LOSS_CONFIG, UPSTREAM_MASK, UPSTREAM_ROWS
from skpo_verl.verl_version import require_verl_version


def install(engine_workers) -> None:
    require_verl_version("ppo_loss_roles")
    from verl.workers.utils import losses

    bound = engine_workers.ppo_loss
    if bound is not losses.ppo_loss and not is_wrapped(bound):
        raise RuntimeError(
            "verl.workers.engine_workers.ppo_loss is not verl's ppo_loss: another plugin replaced it, so SKPO "
            "cannot attach row roles to the loss."
        )
    wrap(engine_workers, "ppo_loss", ["config", "model_output", "data", "dp_group"], _with_skpo_roles)


def _with_skpo_roles(real_ppo_loss):
    from verl.utils import tensordict_utils as tu

    from skpo_verl.training.loss import MicroBatchRoles, micro_batch_roles

    def ppo_loss(config, model_output, data, dp_group=None):
        if UPSTREAM_MASK not in data.keys():
            return real_ppo_loss(config, model_output, data, dp_group=dp_group)
        roles = MicroBatchRoles(
            is_upstream=data[UPSTREAM_MASK].bool(),
            upstream_rows=int(tu.get_non_tensor_data(data, UPSTREAM_ROWS, 0)),
            downstream_tokens=int(tu.get_non_tensor_data(data, DOWNSTREAM_TOKENS, 0)),
            loss=_loss_config(tuple(sorted(tu.get_non_tensor_data(data, LOSS_CONFIG, {}).items()))),
        )
        with micro_batch_roles(roles):
            return real_ppo_loss(config, model_output, data, dp_group=dp_group)

    return ppo_loss


@functools.lru_cache(maxsize=8)
def _loss_config(items: tuple):
    """Each distinct loss dict the driver ships becomes a LossConfig once per worker."""
    from skpo_verl.config import LossConfig

    return LossConfig(**dict(items))
