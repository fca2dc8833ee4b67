"""The `cpu` hardware platform for verl 0.9.1 (`verl/plugin/platform/`).

verl resolves its platform once per process (`platform_manager.get_platform`), from
`VERL_PLATFORM` or by probing the registered platforms, and falls back to `nvidia`.
On a CPU-only machine that fallback breaks everything downstream: FSDP asks for an
accelerator device id, Ray placement waits for GPUs, collectives ask for NCCL. This
platform answers those questions for the host: device `cpu`, backend `gloo`, current
device `torch.device("cpu")`, and `skpo_verl.cpu.host_device` as the `torch.<device>`
module.

Ray: verl's placement (`single_controller/ray/base.py`, `get_placement_groups` and
`ResourcePoolManager._check_resource_available`) counts only "GPU"/"NPU" resources, so
this platform asks Ray for "GPU" bundles; the launch provides them as logical GPUs
(`+ray_kwargs.ray_init.num_gpus=N`). They stand for training ranks, not hardware.

Opt-in only: `is_platform_available` is False, so auto-detection never picks it; it is
used when `VERL_PLATFORM=cpu` (see skpo_verl/cpu/__init__.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch
from verl.plugin.platform import PlatformBase

from skpo_verl.cpu import PLATFORM_NAME, host_device


class PlatformCPU(PlatformBase):
    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return host_device

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check=False) -> bool:
        # Never auto-detected: a CPU-only Ray actor on a GPU cluster also sees no CUDA.
        return False

    def current_device(self) -> torch.device:
        # verl passes this to FSDP as `device_id` and to `Tensor.to`; an int would mean
        # an accelerator index.
        return torch.device("cpu")

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        host_device.set_device(device_index)

    def synchronize(self, device_index: int | None = None) -> None:
        host_device.synchronize()

    def manual_seed(self, seed: int) -> None:
        host_device.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        host_device.manual_seed_all(seed)

    def set_allocator_settings(self, settings: str) -> None:
        """The host allocator has no expandable segments to configure."""

    def empty_cache(self) -> None:
        host_device.empty_cache()

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        """No device profiler on the host."""

    def profiler_stop(self) -> None:
        """No device profiler on the host."""

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_gpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def install(platform_manager) -> None:
    """Hook on `verl.plugin.platform.platform_manager`: register the `cpu` platform."""
    from skpo_verl.verl_version import require_verl_version

    require_verl_version("skpo_verl.cpu.platform")
    platform_manager.PlatformRegistry.register(platform=PLATFORM_NAME)(PlatformCPU)
