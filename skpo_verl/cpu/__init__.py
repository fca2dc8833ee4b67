"""CPU backend for verl 0.9.1 (opt-in; never auto-selected): the `cpu` platform, batched HF
generation and the `hf_cpu` rollout server, and a local token server for tests, so verl's
real trainer runs on a CPU-only machine. Its shims are `patches/cpu_*.py`; the demo tasks
and tiny model it trains are in `skpo_verl.demo`.

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
