"""Shim: register `skpo_agent` with verl 0.9.1's agent loops and tell it when it validates.

Adapts `verl/experimental/agent_loop/agent_loop.py`: `register(name)` is verl's own
registry; `AgentLoopWorker._run_agent_loop(sampling_params, trajectory, ...)` knows whether
it validates (`trajectory["validate"]`, ~l.661-695) but passes only the dataset columns to
an agent loop's `run`; the V1 worker even pops `validate` from the batch first
(`trainer/ppo/v1/agent_loop_tq.py` ~l.61-62). The wrapper below sets
`skpo_verl.rollout.agent_loop.validating` for the duration of the session; `run` reads it.
Wrapping the base class covers `AgentLoopWorkerTQ`, which inherits the method.
"""

from __future__ import annotations

import functools
import inspect

from skpo_verl.verl_version import require_verl_version


def install(agent_loop_module) -> None:
    """Post-import hook on verl.experimental.agent_loop.agent_loop: flag validation, register `skpo_agent`."""
    require_verl_version("agent_loop")
    from skpo_verl.rollout.agent_loop import AGENT_NAME, SKPOAgentLoop

    _install_validation_flag(agent_loop_module.AgentLoopWorker)
    agent_loop_module.register(AGENT_NAME)(SKPOAgentLoop)


def _install_validation_flag(worker_cls) -> None:
    from skpo_verl.rollout.agent_loop import validating

    original = worker_cls._run_agent_loop
    if getattr(original, "__skpo_wrapped__", False):
        return
    parameters = list(inspect.signature(original).parameters)
    if parameters[:3] != ["self", "sampling_params", "trajectory"]:
        raise RuntimeError(f"AgentLoopWorker._run_agent_loop{parameters} is not the signature skpo_verl adapts")

    @functools.wraps(original)
    async def _run_agent_loop(self, sampling_params, trajectory, *args, **kwargs):
        token = validating.set(bool(trajectory["validate"]))
        try:
            return await original(self, sampling_params, trajectory, *args, **kwargs)
        finally:
            validating.reset(token)

    _run_agent_loop.__skpo_wrapped__ = True
    worker_cls._run_agent_loop = _run_agent_loop
