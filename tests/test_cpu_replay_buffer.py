"""The CPU launcher's replay buffer: verl's own sync sampling loop, without the 2 s polling floor.

The buffer is built by verl's `PPOTrainer._build_replay_buffer` from a config composed with
verl's `ppo_trainer.yaml`, and samples from a real TransferQueue (the suite's local Ray,
`tests/conftest.py`). verl's `time.sleep` in the replay-buffer module is replaced by a recorder, so the
test sees each wait the loop asks for, and the rollout "finishes" during the second wait:
what is checked is the interval requested, not wall-clock time.
"""

from __future__ import annotations

import pytest
import torch

from skpo_verl.verl_config import compose_ppo_config

CUSTOM_SAMPLER = (
    "trainer.v1.sampler.custom_sampler.path=pkg://skpo_verl.patches.cpu_replay_buffer",
    "trainer.v1.sampler.custom_sampler.name=ShortPollReplayBuffer",
)


def build_buffer(*overrides: str):
    """The replay buffer verl's trainer would build for this config."""
    from verl.trainer.ppo.v1.trainer_base import get_trainer_cls

    config = compose_ppo_config(list(overrides))
    trainer_cls = get_trainer_cls(config.trainer.v1.trainer_mode)
    trainer = trainer_cls.__new__(trainer_cls)  # only what _build_replay_buffer reads
    trainer.config = config
    trainer.trainer_mode = config.trainer.v1.trainer_mode
    return trainer._build_replay_buffer()


def sample_while_a_rollout_finishes(tq, buffer, monkeypatch, uid: str) -> tuple[list[float], list[str]]:
    """One prompt group is running; it finishes during the buffer's second wait. Returns the
    waits the buffer asked for and the keys it sampled."""
    from verl.trainer.ppo.v1 import replay_buffer

    partition = "train"
    tq.kv_put(key=uid, partition_id=partition, tag={"is_prompt": True, "status": "running", "global_steps": 1})
    tq.kv_put(key=f"{uid}_0_0", partition_id=partition, fields={"x": torch.tensor([1])}, tag={"status": "done"})
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            tq.kv_put(key=uid, partition_id=partition, tag={"is_prompt": True, "status": "finished", "global_steps": 1})

    monkeypatch.setattr(replay_buffer.time, "sleep", sleep)
    batch, _ = buffer.sample(global_steps=1, partition_id=partition, batch_size=1)
    return waits, list(batch.keys)


def test_verl_default_buffer_waits_two_seconds_per_poll(transfer_queue, monkeypatch):
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    buffer = build_buffer()
    assert type(buffer) is ReplayBuffer
    waits, keys = sample_while_a_rollout_finishes(transfer_queue, buffer, monkeypatch, "defaultuid")
    assert waits == [2.0, 2.0]
    assert keys == ["defaultuid_0_0"]


def test_cpu_launcher_buffer_polls_at_its_configured_interval(transfer_queue, monkeypatch):
    from skpo_verl.patches.cpu_replay_buffer import ShortPollReplayBuffer

    buffer = build_buffer(*CUSTOM_SAMPLER, "+trainer.v1.sampler.sampler_kwargs.poll_interval_s=0.01")
    assert type(buffer) is ShortPollReplayBuffer
    waits, keys = sample_while_a_rollout_finishes(transfer_queue, buffer, monkeypatch, "shortuid")
    assert waits == [0.01, 0.01]
    assert keys == ["shortuid_0_0"]


def test_cpu_launcher_buffer_default_interval():
    assert build_buffer(*CUSTOM_SAMPLER).poll_interval == 0.05


@pytest.mark.parametrize(
    "override, message",
    [
        ("algorithm.filter_groups.enable=True", "algorithm.filter_groups.enable"),
        ("trainer.v1.sampler.sync_refill_failed_groups=True", "sync_refill_failed_groups"),
        ("trainer.v1.trainer_mode=colocate_async", "trainer_mode=colocate_async"),
        ("+trainer.v1.sampler.sampler_kwargs.poll_interval=0.1", "unknown trainer.v1.sampler.sampler_kwargs"),
        ("+trainer.v1.sampler.sampler_kwargs.poll_interval_s=0", "must be > 0"),
    ],
)
def test_cpu_launcher_buffer_refuses_what_it_would_not_apply(override, message):
    with pytest.raises(ValueError, match=message):
        build_buffer(*CUSTOM_SAMPLER, override)
