"""CPU backend: a valid process-group backend string on the host (opt-in, `VERL_PLATFORM=cpu`).

Wraps `verl/utils/distributed.py::initialize_global_process_group_ray` (l.83-99), which every
training worker calls without a backend (`workers/engine_workers.py` l.89). Its default,
f"cpu:gloo,{device}:{backend}", becomes "cpu:gloo,cpu:gloo" on the host and torch rejects the
duplicate device type. The wrapper calls verl's function whole, passing "cpu:gloo" when the
caller passed no backend; nothing of verl's is dropped. `engine_workers` imports the function
by name, which works because the hook replaces it as soon as `verl.utils.distributed` is
imported, before `engine_workers` reads it.
"""

from __future__ import annotations

from skpo_verl.cpu import cpu_backend_requested
from skpo_verl.patches.wrapping import wrap
from skpo_verl.verl_version import require_verl_version

HOST_BACKEND = "cpu:gloo"


def install(distributed) -> None:
    require_verl_version("skpo_verl.patches.cpu_distributed")
    if not cpu_backend_requested():
        return
    wrap(distributed, "initialize_global_process_group_ray", ["timeout_second", "backend"], _on_host)


def _on_host(initialize):
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        return initialize(timeout_second=timeout_second, backend=backend or HOST_BACKEND)

    return initialize_global_process_group_ray
