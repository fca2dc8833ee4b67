"""CPU backend: let verl 0.9.1's FSDP2 engine train on the host (opt-in, `VERL_PLATFORM=cpu`).

Adapts `verl/workers/engine/fsdp/transformer_impl.py`:
- l.1143 and l.1594 register `FSDPEngineWithLMHead` / `FSDPEngineWithValueHead` for the
  devices "cuda" and "npu" only, so `EngineRegistry.get_engine_cls` (engine/base.py
  l.399-429) finds nothing for device "cpu". The same classes are registered for "cpu":
  nothing in them is accelerator-specific once the platform reports the host device.
- l.462 builds `CPUOffloadPolicy(pin_memory=True)` for every forward-only (reference)
  FSDP2 module; pinning needs an accelerator, so on the host the module's name is rebound to
  a subclass that drops `pin_memory` (only when `VERL_PLATFORM=cpu`; nothing else changes).
FSDP1 (`strategy=fsdp`) hard-codes further accelerator options (l.437-449) and is not
adapted: use `strategy=fsdp2` on CPU.
"""

from __future__ import annotations

from skpo_verl.cpu import PLATFORM_NAME, cpu_backend_requested
from skpo_verl.verl_version import require_verl_version


def install(transformer_impl) -> None:
    require_verl_version("skpo_verl.patches.cpu_engine")
    if not cpu_backend_requested():
        return
    register = transformer_impl.EngineRegistry.register
    register(model_type="language_model", backend=["fsdp", "fsdp2"], device=PLATFORM_NAME)(
        transformer_impl.FSDPEngineWithLMHead
    )
    register(model_type="value_model", backend=["fsdp", "fsdp2"], device=PLATFORM_NAME)(
        transformer_impl.FSDPEngineWithValueHead
    )

    pinned_policy = transformer_impl.CPUOffloadPolicy

    class HostOffloadPolicy(pinned_policy):
        """`CPUOffloadPolicy` that never pins host memory (there is no accelerator)."""

        def __init__(self, pin_memory: bool = False):
            super().__init__(pin_memory=False)

    transformer_impl.CPUOffloadPolicy = HostOffloadPolicy
