"""CPU backend: make `actor_rollout_ref.rollout.name=hf_cpu` resolve (opt-in, `VERL_PLATFORM=cpu`).

verl 0.9.1 looks a rollout name up in two places:
- `workers/rollout/base.py` `_ROLLOUT_REGISTRY` (l.89-93), a private dict of
  (name, mode) -> in-worker adapter class path read by `get_rollout_class` (l.96); it has
  no registration API, so the entry is added to the dict.
- `workers/rollout/replica.py` `RolloutReplicaRegistry` (l.312), the public registry of
  server replicas used by `LLMServerManager`.
Both point at `skpo_verl.cpu.rollout`, imported only when the name is used.
"""

from __future__ import annotations

from skpo_verl.cpu import ROLLOUT_NAME, cpu_backend_requested
from skpo_verl.verl_version import require_verl_version

ADAPTER_PATH = "skpo_verl.cpu.rollout.HFCPUServerAdapter"


def install_adapter(rollout_base) -> None:
    require_verl_version("skpo_verl.patches.cpu_rollout:install_adapter")
    if not cpu_backend_requested():
        return
    registry = rollout_base._ROLLOUT_REGISTRY
    if not isinstance(registry, dict) or ("vllm", "async") not in registry:
        raise RuntimeError("verl.workers.rollout.base._ROLLOUT_REGISTRY no longer has the 0.9.1 layout")
    registry[(ROLLOUT_NAME, "async")] = ADAPTER_PATH


def _load_replica():
    from skpo_verl.cpu.rollout import HFCPUReplica

    return HFCPUReplica


def install_replica(replica) -> None:
    require_verl_version("skpo_verl.patches.cpu_rollout:install_replica")
    if not cpu_backend_requested():
        return
    replica.RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_replica)
