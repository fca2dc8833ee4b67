"""CPU backend: verl's sync replay buffer without its 2-second polling floor.

verl 0.9.1's `ReplayBuffer.sample` (`trainer/ppo/v1/replay_buffer.py`) looks in TransferQueue
for finished prompt groups and, while too few have finished, sleeps `poll_interval` before
looking again (`_wait_for_next_poll`). The interval is a constructor default, 2.0 s, that
`PPOTrainer._build_replay_buffer` (`trainer/ppo/v1/trainer_base.py`) never sets. A GPU step of
minutes does not notice; a CPU step of a tiny model waits up to 2 s for nothing at every step
and every validation (seen: `timing_s/gen` always a multiple of 2.0 s).

verl's extension point for the buffer is `trainer.v1.sampler.custom_sampler.{path,name}`; the
CPU launcher selects `ShortPollReplayBuffer` there, and `trainer.v1.sampler.sampler_kwargs`
(`poll_interval_s`) reaches it. It is verl's `ReplayBuffer` with a shorter interval: the
sampling logic is verl's own. GPU launchers do not select it and keep verl's buffer.

verl builds a custom sampler with fewer arguments than its own (no DAPO group filtering, no
refill of failed groups), so this buffer refuses a configuration that asks for those. Where verl's
buffer would train on the groups left after a rollout failure, this one stops the step with the
failed request's error (`skpo_verl.patches.cpu_rollout_failures`).
"""

from __future__ import annotations

from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

from skpo_verl.patches.cpu_rollout_failures import raise_failed_prompts
from skpo_verl.verl_version import require_verl_version

# A poll is one small TransferQueue metadata call (`tq.kv_list`); at 20 per second it costs
# little CPU and adds at most 50 ms to a step.
DEFAULT_POLL_INTERVAL_S = 0.05
PATH = "pkg://skpo_verl.patches.cpu_replay_buffer"
NAME = "ShortPollReplayBuffer"


class ShortPollReplayBuffer(ReplayBuffer):
    """verl's sync `ReplayBuffer`, polling every `sampler_kwargs.poll_interval_s` seconds."""

    def __init__(self, trainer_mode: str, *, sampler_kwargs, refill_fn=None, **kwargs):
        require_verl_version("skpo_verl.patches.cpu_replay_buffer:ShortPollReplayBuffer")
        if trainer_mode != "sync":
            raise ValueError(
                f"trainer.v1.sampler.custom_sampler={NAME} replaces verl's sync ReplayBuffer only; "
                f"trainer.v1.trainer_mode={trainer_mode} needs verl's own buffer: unset "
                "trainer.v1.sampler.custom_sampler.path/name."
            )
        _refuse_what_verl_does_not_pass(refill_fn)
        options = dict(sampler_kwargs or {})
        poll_interval = float(options.pop("poll_interval_s", DEFAULT_POLL_INTERVAL_S))
        if not poll_interval > 0:
            raise ValueError(
                f"trainer.v1.sampler.sampler_kwargs.poll_interval_s must be > 0 seconds, got {poll_interval}"
            )
        if options:
            raise ValueError(
                f"{NAME}: unknown trainer.v1.sampler.sampler_kwargs {sorted(options)}; it reads poll_interval_s only"
            )
        super().__init__(
            trainer_mode,
            sampler_kwargs=sampler_kwargs,
            refill_fn=refill_fn,
            poll_interval=poll_interval,
            **kwargs,
        )

    def _terminal_eviction_reasons(self, global_steps, partition_id):
        """Called by `sample` right after each read of the prompts' status: a failed prompt fails the step."""
        raise_failed_prompts(partition_id, self.failure_keys[partition_id])
        return super()._terminal_eviction_reasons(global_steps, partition_id)


def _refuse_what_verl_does_not_pass(refill_fn) -> None:
    """`_build_replay_buffer` gives a custom sampler neither DAPO filtering nor failed-group refill.

    The trainer is reachable as the owner of `refill_fn` (its bound `_add_prompts_to_generate`).
    """
    config = getattr(getattr(refill_fn, "__self__", None), "config", None)
    if config is None:
        return
    filter_groups = config.algorithm.get("filter_groups", None)
    if filter_groups is not None and filter_groups.get("enable", False):
        raise ValueError(
            f"algorithm.filter_groups.enable=True is not applied by a custom sampler ({NAME}); "
            "unset trainer.v1.sampler.custom_sampler.path/name to use verl's buffer, or disable filter_groups."
        )
    if config.trainer.v1.sampler.get("sync_refill_failed_groups", False):
        raise ValueError(
            f"trainer.v1.sampler.sync_refill_failed_groups=True is not applied by a custom sampler ({NAME}); "
            "unset trainer.v1.sampler.custom_sampler.path/name to use verl's buffer."
        )
