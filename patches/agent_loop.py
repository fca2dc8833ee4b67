"""Shim: register `skpo_agent` with verl 0.9.1's agent loops, tell it when it validates, and judge
each of its answers on exactly its own tokens.

Adapts `verl/experimental/agent_loop/agent_loop.py`:

- `register(name)` (~l.470-478) records `{"_target_": "<module>.<class>"}` in
  `_agent_loop_registry`, which the worker instantiates with Hydra. The hook writes that same
  entry for `skpo_agent` without importing the class: the hook runs while verl's module
  finishes importing, which may be in the middle of importing `skpo_verl.rollout.agent_loop`
  itself (it subclasses verl's `AgentLoopBase`).
- `AgentLoopWorker._run_agent_loop(sampling_params, trajectory, ...)` knows whether it
  validates (`trajectory["validate"]`, ~l.661-695) but passes only the dataset columns to an
  agent loop's `run`; the V1 worker even pops `validate` from the batch first
  (`trainer/ppo/v1/agent_loop_tq.py` ~l.61-62). The wrapper sets
  `skpo_verl.rollout.agent_loop.validating` for the duration of the session.
- `AgentLoopWorker._compute_score(outputs, kwargs)` (~l.967-1029) right-pads all outputs of
  a session into one batch and sends it to the reward loop, whose managers judge one row and
  take `attention_mask[-response_length:].sum()` as its length (`reward_manager/naive.py`
  ~l.35-40, which judges the last row; `dapo.py`, `gdpo.py` and `limited.py` judge the first).
  SKPO's session 0 returns `[upstream (q -> s), downstream_0]`: its answer would be judged
  with pad tokens appended whenever s is longer than the answer (or, with the DAPO manager,
  the segment would be judged instead). The wrapper sends each SKPO session's answer to the
  real `_compute_score` alone, as a single-turn agent loop's output, and with
  `upstream_reward=own_completion` judges the kept candidate's own completion the same way.
  `AgentLoopWorkerTQ._agent_loop_postprocess` (`trainer/ppo/v1/agent_loop_tq.py` ~l.158-175)
  then copies the session's last output's `reward_score` onto every earlier output. With
  multi-split (`algorithm.skpo.num_splits` > 1) a session returns one answer per stage, so each
  answer remembers its own score (`SKPOAgentLoopOutput.keep_own_score`) and puts it back when
  verl turns it into columns (`as_dict`, called after the copy).

Both wrappers call verl's methods: `_run_agent_loop` whole; `_compute_score` once per SKPO
answer (one per stage) (and per kept-candidate completion) instead of once with the session's padded outputs.
Sessions of any other agent loop pass straight through. Wrapping the base class covers
`AgentLoopWorkerTQ`, which inherits both methods.
"""

from __future__ import annotations

from skpo_verl.patches.wrapping import wrap
from skpo_verl.rollout import AGENT_CLASS, AGENT_NAME
from skpo_verl.verl_version import require_verl_version


def install(agent_loop_module) -> None:
    """Post-import hook on verl.experimental.agent_loop.agent_loop."""
    require_verl_version("agent_loop")
    worker_cls = agent_loop_module.AgentLoopWorker
    wrap(worker_cls, "_run_agent_loop", ["self", "sampling_params", "trajectory"], _flag_validation)
    wrap(worker_cls, "_compute_score", ["self", "outputs", "kwargs"], _score_each_answer_alone)
    agent_loop_module._agent_loop_registry[AGENT_NAME] = {"_target_": AGENT_CLASS}


def _flag_validation(original):
    async def _run_agent_loop(self, sampling_params, trajectory, *args, **kwargs):
        from skpo_verl.rollout.agent_loop import validating

        token = validating.set(bool(trajectory["validate"]))
        try:
            return await original(self, sampling_params, trajectory, *args, **kwargs)
        finally:
            validating.reset(token)

    return _run_agent_loop


def _score_each_answer_alone(original):
    async def _compute_score(self, outputs, kwargs, *args, **more):
        from skpo_verl.rollout.agent_loop import SKPOAgentLoopOutput

        if not any(isinstance(output, SKPOAgentLoopOutput) for output in outputs):
            return await original(self, outputs, kwargs, *args, **more)
        # Each answer alone. With one split the answer is the session's last output; with multi-split a
        # session answers once per stage, and verl then copies the last one's score onto all the others
        # (`_agent_loop_postprocess`), so each answer keeps its own for `as_dict` to put back.
        for output in outputs:
            if isinstance(output, SKPOAgentLoopOutput) and not output.skpo_is_upstream:
                await original(self, [output], kwargs, *args, **more)
                output.keep_own_score()
        for output in outputs[:-1]:
            completion = getattr(output, "_own_completion", None)
            if completion is None:
                continue
            await original(self, [completion], kwargs, *args, **more)
            if completion.reward_score is None:
                raise RuntimeError(
                    "algorithm.skpo.upstream_reward=own_completion needs rewards computed in the agent loop (a rule "
                    "reward, a custom reward function, or a reward model with its own resource pool); with a "
                    "colocated reward model the kept candidate's completion cannot be judged."
                )
            output.skpo_completion_reward = float(completion.reward_score)

    return _compute_score
