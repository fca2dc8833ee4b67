"""CPU backend: a valid process-group backend string on the host (opt-in, `VERL_PLATFORM=cpu`).

Adapts `verl/utils/distributed.py` `initialize_global_process_group_ray` (l.83-99), which
every training worker calls without a backend (`workers/engine_workers.py` l.89). Its
default, f"cpu:gloo,{device}:{backend}", becomes "cpu:gloo,cpu:gloo" on the host and
torch rejects the duplicate device type. On the host the backend is "cpu:gloo".
"""

from __future__ import annotations

import functools

from skpo_verl.cpu import cpu_backend_requested
from skpo_verl.verl_version import require_verl_version

HOST_BACKEND = "cpu:gloo"


def install(distributed) -> None:
    require_verl_version("skpo_verl.patches.cpu_distributed")
    if not cpu_backend_requested():
        return
    initialize = distributed.initialize_global_process_group_ray

    @functools.wraps(initialize)
    def initialize_on_host(timeout_second=None, backend=None):
        return initialize(timeout_second=timeout_second, backend=backend or HOST_BACKEND)

    distributed.initialize_global_process_group_ray = initialize_on_host
