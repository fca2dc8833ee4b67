"""CPU backend: a failed rollout request fails the training step, with the error that failed it (opt-in,
`VERL_PLATFORM=cpu`).

verl 0.9.1's V1 agent-loop worker runs a prompt's sessions in `AgentLoopWorkerTQ._run_prompt`
(`trainer/ppo/v1/agent_loop_tq.py` l.107-148): any session error (a rollout server that refused or
lost a request, an engine that died) is logged in the worker, and the prompt is marked `failure`
in TransferQueue, without the error. The sync replay buffer keeps failed groups sampleable and
pads what they lack (`trainer/ppo/v1/replay_buffer.py`, `ReplayBuffer` docstring l.111-113): the
step trains on fewer rows and says nothing, and only a step left with no rows at all stops, with
"Sync replay buffer selected terminal groups with no materializable trajectories" and not the
cause. On a CPU run (a demo, a CI test) a rollout error is a defect to see at once, so:

- `AgentLoopWorker._run_agent_loop` (`experimental/agent_loop/agent_loop.py` l.661) is wrapped to
  write a failed session's error onto its prompt's TransferQueue tag (`rollout_error`), before
  the session ends and so before verl marks the prompt `failure`;
- the CPU replay buffer (`skpo_verl.patches.cpu_replay_buffer.ShortPollReplayBuffer`) raises
  `RolloutFailed` with that error as soon as a prompt is marked `failure`.
"""

from __future__ import annotations

from skpo_verl.cpu import cpu_backend_requested
from skpo_verl.verl_version import require_verl_version

ERROR_TAG = "rollout_error"
# A Ray error carries the remote traceback; its head names the error and the tail its origin.
_MAX_MESSAGE = 6000


class RolloutFailed(RuntimeError):
    """A rollout request of the step failed; the message is the error of the failed session."""


def install(agent_loop_module) -> None:
    """Hook on `verl.experimental.agent_loop.agent_loop`."""
    require_verl_version("skpo_verl.patches.cpu_rollout_failures")
    if not cpu_backend_requested():
        return
    from skpo_verl.patches.wrapping import wrap

    wrap(agent_loop_module.AgentLoopWorker, "_run_agent_loop", ["self", "sampling_params", "trajectory"], _tag_errors)


def _tag_errors(original):
    async def _run_agent_loop(self, sampling_params, trajectory, *args, **kwargs):
        try:
            return await original(self, sampling_params, trajectory, *args, **kwargs)
        except Exception as error:
            import transfer_queue as tq

            partition = "val" if trajectory["validate"] else "train"
            text = describe(error, f"session {kwargs.get('session_id')} of prompt uid={kwargs.get('uid')}")
            await tq.async_kv_put(key=kwargs["uid"], partition_id=partition, tag={ERROR_TAG: text})
            raise

    return _run_agent_loop


def describe(error: BaseException, where: str) -> str:
    text = f"{where}: {type(error).__name__}: {error}"
    if len(text) > _MAX_MESSAGE:
        half = _MAX_MESSAGE // 2
        text = f"{text[:half]}\n[... {len(text) - _MAX_MESSAGE} characters ...]\n{text[-half:]}"
    return text


def raise_failed_prompts(partition_id: str, failed_uids: set[str]) -> None:
    """Raise `RolloutFailed` naming each failed prompt of the partition and the error that failed it."""
    if not failed_uids:
        return
    import transfer_queue as tq

    tags = (tq.kv_list(partition_id) or {}).get(partition_id, {})
    lines = [
        f"prompt uid={uid}: "
        + (tags.get(uid, {}).get(ERROR_TAG) or "no error recorded; see 'Error in _run_prompt' in the agent-loop log")
        for uid in sorted(failed_uids)
    ]
    raise RolloutFailed(
        f"{len(failed_uids)} prompt(s) of partition '{partition_id}' failed in rollout; the step stops rather than "
        "train on the rest (CPU backend, docs/cpu_backend.md):\n" + "\n".join(lines)
    )
