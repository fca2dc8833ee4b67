"""The `torch.<device>` namespace verl gets from the CPU platform (`get_torch_device()`).

verl calls accelerator functions through this module: stream/event/synchronize come from
`torch.cpu`; the allocator, memory and RNG calls `torch.cpu` lacks are host equivalents or
no-ops (the host allocator has no cache to empty, and the device RNG is torch's default
CPU generator).
"""

from __future__ import annotations

import psutil
import torch
from torch.cpu import Event, Stream, StreamContext, current_stream, device_count, is_available, stream, synchronize

__all__ = [
    "Event",
    "Stream",
    "StreamContext",
    "current_device",
    "current_stream",
    "device_count",
    "empty_cache",
    "get_device_name",
    "get_rng_state",
    "ipc_collect",
    "is_available",
    "manual_seed",
    "manual_seed_all",
    "max_memory_allocated",
    "max_memory_reserved",
    "mem_get_info",
    "memory_allocated",
    "memory_reserved",
    "reset_peak_memory_stats",
    "set_device",
    "set_per_process_memory_fraction",
    "set_rng_state",
    "stream",
    "synchronize",
]


def current_device() -> torch.device:
    return torch.device("cpu")


def set_device(device=None) -> None:
    """There is one host device; every rank uses it."""


def get_device_name(device=None) -> str:
    return "cpu"


def empty_cache() -> None:
    """The host allocator keeps no cache verl could release."""


def ipc_collect() -> None:
    """No CUDA IPC handles exist on the host."""


def set_per_process_memory_fraction(fraction: float, device=None) -> None:
    """Host memory is not partitioned between processes."""


def mem_get_info(device=None) -> tuple[int, int]:
    """(free, total) bytes of host memory, like `torch.cuda.mem_get_info`."""
    memory = psutil.virtual_memory()
    return memory.available, memory.total


def _resident_bytes() -> int:
    return psutil.Process().memory_info().rss


def memory_allocated(device=None) -> int:
    return _resident_bytes()


def memory_reserved(device=None) -> int:
    return _resident_bytes()


def max_memory_allocated(device=None) -> int:
    return _resident_bytes()


def max_memory_reserved(device=None) -> int:
    return _resident_bytes()


def reset_peak_memory_stats(device=None) -> None:
    """Peak figures above are the current resident size; nothing to reset."""


def get_rng_state(device=None) -> torch.Tensor:
    return torch.get_rng_state()


def set_rng_state(state: torch.Tensor, device=None) -> None:
    torch.set_rng_state(state)


def manual_seed(seed: int) -> None:
    torch.manual_seed(seed)


def manual_seed_all(seed: int) -> None:
    torch.manual_seed(seed)
