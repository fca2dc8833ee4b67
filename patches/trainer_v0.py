"""Shim: refuse SKPO on verl 0.9.1's deprecated V0 trainer (`trainer.use_v1=false`).

Adapts `verl/trainer/ppo/ray_trainer.py::RayPPOTrainer.__init__` (l.296). V0 needs exactly
one agent-loop output per input row and has no TransferQueue, so SKPO's G + 1 rows per
prompt cannot flow through it; fail at construction with the fix instead of mid-run. For
any other run the wrapper runs the half-configuration check (SKPO's loss or agent loop
without its estimator), then calls verl's `__init__` whole.
"""

from __future__ import annotations

from skpo_verl.patches.wrapping import wrap
from skpo_verl.verl_version import require_verl_version


def install(ray_trainer) -> None:
    require_verl_version("trainer_v0")
    wrap(ray_trainer.RayPPOTrainer, "__init__", ["self", "config"], _refusing_skpo)


def _refusing_skpo(original):
    from skpo_verl.validation import SKPOConfigError, check_not_half_configured, is_skpo_run

    def __init__(self, config, *args, **kwargs):
        if is_skpo_run(config):
            raise SKPOConfigError(
                "algorithm.adv_estimator=skpo runs on verl's V1 trainer only, but trainer.use_v1=false selected the "
                "deprecated V0 trainer. Set trainer.use_v1=true (the default in verl 0.9.1)."
            )
        check_not_half_configured(config)
        original(self, config, *args, **kwargs)

    return __init__
