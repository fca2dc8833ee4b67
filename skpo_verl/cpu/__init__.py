"""CPU backend for verl 0.9.1 (opt-in; never auto-selected): tiny model, HF generation,
platform and rollout adaptations so verl's real trainer runs on a CPU-only machine.

The one switch is verl's own platform override, `VERL_PLATFORM=cpu`, set in the shell
that launches `python -m verl.trainer.main_ppo`. verl reads it on first use of the
platform in each process (`plugin/platform/platform_manager.py`, `_detect_platform_name`).
The `cpu` platform is always registered but reports itself unavailable to auto-detection,
so a GPU cluster never selects it; every other CPU shim installs only when the switch is
set. See docs/cpu_backend.md.
"""

import os

PLATFORM_ENV = "VERL_PLATFORM"
PLATFORM_NAME = "cpu"
# The rollout backend's name, for `actor_rollout_ref.rollout.name`.
ROLLOUT_NAME = "hf_cpu"


def cpu_backend_requested() -> bool:
    """True when this process was launched with `VERL_PLATFORM=cpu`."""
    return os.environ.get(PLATFORM_ENV, "").strip().lower() == PLATFORM_NAME
