"""Shim: let the `skpo` policy loss see each row's role inside verl 0.9.1's `ppo_loss`.

Adapts `verl/workers/utils/losses.py::ppo_loss`, which selects only `response_mask,
old_log_probs, advantages[, rollout_is_weights, ref_log_prob]` before calling the
registered policy loss, and `verl/workers/engine_workers.py` (l.643), which binds
`partial(ppo_loss, config=actor_config)` from its module namespace. We replace that name
with a wrapper that publishes the micro-batch's `skpo_upstream_mask` column, the loss
normalisers and the loss hyperparameters (both sent by the driver in the batch's extra info,
`skpo_verl.patches.trainer_v1._update_actor`), then calls verl's real `ppo_loss` whole. Batches
without the column (any other estimator) pass straight through; nothing of verl's is dropped.
A batch with the column but without either entry fails, naming it: no default stands in for
what the driver sends. With distillation on, verl binds `distillation_ppo_loss` instead
(l.640): the `skpo` loss then finds no roles and stops the run with that message.
"""

from __future__ import annotations

import functools
import json

from skpo_verl.patches.wrapping import is_wrapped, wrap
from skpo_verl.rows import LOSS_CONFIG, LOSS_NORMALISERS, UPSTREAM_MASK
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
    from skpo_verl.training.loss import MicroBatchRoles, micro_batch_roles

    def ppo_loss(config, model_output, data, dp_group=None):
        if UPSTREAM_MASK not in data.keys():
            return real_ppo_loss(config, model_output, data, dp_group=dp_group)
        loss, normalisers = (_shipped(data, entry) for entry in (LOSS_CONFIG, LOSS_NORMALISERS))
        roles = MicroBatchRoles(
            is_upstream=data[UPSTREAM_MASK].bool(), normalisers=_normalisers(normalisers), loss=_loss_config(loss)
        )
        with micro_batch_roles(roles):
            return real_ppo_loss(config, model_output, data, dp_group=dp_group)

    return ppo_loss


def _shipped(data, entry: str) -> str:
    """The driver's non-tensor `entry` as a canonical JSON key (hashable, for the caches below)."""
    from verl.utils import tensordict_utils as tu

    value = tu.get_non_tensor_data(data, entry, None)
    if value is None:
        raise RuntimeError(
            f"This micro-batch carries SKPO roles ({UPSTREAM_MASK}) but no '{entry}' entry, which the driver "
            "(skpo_verl.patches.trainer_v1._update_actor) sends with every actor update. Without it SKPO's loss "
            "would fall back to defaults. Check that the driver runs skpo-verl's V1 trainer shim "
            "('[skpo_verl] ERROR' lines in its log)."
        )
    return json.dumps(dict(value), sort_keys=True)


@functools.lru_cache(maxsize=8)
def _loss_config(shipped: str):
    from skpo_verl.training.loss import loss_config_from_shipped

    return loss_config_from_shipped(json.loads(shipped))


@functools.lru_cache(maxsize=64)
def _normalisers(shipped: str):
    from skpo_verl.training.loss import LossNormalisers

    return LossNormalisers.from_shipped(json.loads(shipped))
