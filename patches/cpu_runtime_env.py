"""CPU backend: carry the `VERL_PLATFORM=cpu` switch into every Ray process.

Wraps `verl/trainer/constants_ppo.py::get_ppo_ray_runtime_env` (l.105-154), the runtime
environment `main_ppo.run_ppo` passes to `ray.init`. A Ray cluster started by `ray.init` in
the driver inherits the driver's environment, but one started beforehand (`ray start`) does
not, and a worker that resolves the platform without the switch falls back to `nvidia` and
fails far from the cause. The wrapper calls verl's function whole and adds the switch to the
job's `env_vars`, so every worker, agent-loop and reward process sees it; nothing of verl's
is dropped.
"""

from __future__ import annotations

from skpo_verl.cpu import PLATFORM_ENV, PLATFORM_NAME, cpu_backend_requested
from skpo_verl.patches.wrapping import wrap
from skpo_verl.verl_version import require_verl_version


def install(constants_ppo) -> None:
    require_verl_version("skpo_verl.patches.cpu_runtime_env")
    if not cpu_backend_requested():
        return
    wrap(constants_ppo, "get_ppo_ray_runtime_env", ["config"], _with_platform_switch)


def _with_platform_switch(get_runtime_env):
    def get_ppo_ray_runtime_env(config=None):
        runtime_env = get_runtime_env(config)
        runtime_env.setdefault("env_vars", {})[PLATFORM_ENV] = PLATFORM_NAME
        return runtime_env

    return get_ppo_ray_runtime_env
