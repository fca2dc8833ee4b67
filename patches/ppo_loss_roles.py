"""Shim: let the `skpo` policy loss see each row's role inside verl 0.9.1's `ppo_loss`.

Adapts `verl/workers/utils/losses.py::ppo_loss`, which selects only `response_mask,
old_log_probs, advantages[, rollout_is_weights, ref_log_prob]` before calling the
registered policy loss, and `verl/workers/engine_workers.py` (l.643), which binds
`partial(ppo_loss, config=actor_config)` from its module namespace. We replace that name
with a wrapper that publishes the micro-batch's `skpo_upstream_mask` column, the
mini-batch role counts (added by `engine_role_counts`) and the loss hyperparameters (sent
by the driver in the batch's extra info), then calls verl's real `ppo_loss` unchanged.
"""

from __future__ import annotations

import functools

from skpo_verl.rows import DOWNSTREAM_TOKENS, LOSS_CONFIG, UPSTREAM_MASK, UPSTREAM_ROWS
from skpo_verl.verl_version import require_verl_version


def install(engine_workers) -> None:
    require_verl_version("ppo_loss_roles")
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils import losses

    from skpo_verl.training.loss import MicroBatchRoles, micro_batch_roles

    real_ppo_loss = losses.ppo_loss
    if engine_workers.ppo_loss is not real_ppo_loss:
        raise RuntimeError(
            "verl.workers.engine_workers.ppo_loss is not verl's ppo_loss: another plugin replaced it, so SKPO "
            "cannot attach row roles to the loss."
        )

    @functools.wraps(real_ppo_loss)
    def ppo_loss_with_skpo_roles(config, model_output, data, dp_group=None):
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

    engine_workers.ppo_loss = ppo_loss_with_skpo_roles


@functools.lru_cache(maxsize=8)
def _loss_config(items: tuple):
    """Each distinct loss dict the driver ships becomes a LossConfig once per worker."""
    from skpo_verl.config import LossConfig

    return LossConfig(**dict(items))
