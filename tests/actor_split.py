"""Harness: the actor side of one SKPO update without a model — verl's dispatch to data-parallel
ranks, its mini-batch and micro-batch splits, and its real `ppo_loss` on each micro-batch.

`ActorWorkers` stands in for the actor worker group `PPOTrainer._update_actor` calls; its
`update_actor` runs the worker-side split (`actor_mini_batches`) and keeps, per rank and
mini-batch, the micro-batches the loss would see. `loss_and_gradients` runs verl's `ppo_loss`
(through SKPO's role shim, as `engine_workers` binds it) on one micro-batch.
"""

from __future__ import annotations

import functools

import torch
from engine_stub import stub_engine_class


class ActorWorkers:
    """The actor worker group as `_update_actor` calls it (see `actor_mini_batches`)."""

    def __init__(self, dp_size: int, actor_config):
        self._dispatch_info = {"actor": list(range(dp_size))}
        self.actor_config = actor_config
        self.mini_batches = []  # (rank, mini-batch number, [micro-batches])
        self.micro_batches = []  # all of them, in order, rank by rank

    def update_actor(self, batch):
        self.mini_batches = actor_mini_batches(batch, len(self._dispatch_info["actor"]), self.actor_config)
        self.micro_batches = [micro for _, _, micros in self.mini_batches for micro in micros]
        return {"metrics": {"mfu": 0.0}}


def _recording_engine():
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine.utils import prepare_micro_batches

    class RecordingEngine(stub_engine_class()):
        """Stands in for the model engine (no model here): `train_batch` is verl's `BaseEngine.train_batch`;
        the forward/backward pass only splits the mini-batch into micro-batches with verl's
        `prepare_micro_batches`, after the non-tensor entries `FSDPEngine.forward_backward_batch`
        adds (this rank is its own data-parallel world)."""

        def __init__(self):
            self.micro_batches = []

        def forward_backward_batch(self, data, loss_function, forward_only=False):
            tu.assign_non_tensor(data, batch_num_tokens=int(data["loss_mask"].values().sum()), dp_size=1)
            micro_batches, _ = prepare_micro_batches(data=data, dp_group=None, same_micro_num_in_dp=True)
            self.micro_batches.extend(micro_batches)
            return {}

    return RecordingEngine()


def actor_mini_batches(batch, dp_size: int, actor_config) -> list[tuple[int, int, list]]:
    """(rank, mini-batch number, its micro-batches) in the order verl's actor workers compute the loss.

    - dispatch: `update_actor` is registered with `make_nd_compute_dataproto_dispatch_fn`, which
      splits the batch with `BatchData(batch).chunk(dp_size)`; the worker's `tqbridge` turns its
      chunk into a TensorDict (`_meta_to_realdata`), the batch's extra info as non-tensor entries;
    - `TrainingWorker.train_mini_batch`: pops the mini-batch settings, `tu.make_iterator`;
    - `TrainingWorker.train_batch`: the engine defaults from the actor config, then the engine.
    Mini-batch j of every rank together make the global mini-batch j of one optimizer step.
    """
    from verl.protocol import BatchData
    from verl.utils import tensordict_utils as tu
    from verl.utils import transferqueue_utils

    engine = _recording_engine()
    out = []
    for rank, rank_meta in enumerate(BatchData(batch).chunk(chunks=dp_size)):
        data = transferqueue_utils._meta_to_realdata(rank_meta)
        mini_batch_size = tu.pop(data, key="mini_batch_size")
        epochs = tu.pop(data, key="epochs", default=1)
        seed = tu.pop(data, key="seed", default=42)
        dataloader_kwargs = tu.pop(data, key="dataloader_kwargs", default={})
        iterator = tu.make_iterator(data, mini_batch_size // dp_size, epochs, seed + rank, dataloader_kwargs)
        for number, mini_batch in enumerate(iterator):
            tu.assign_non_tensor(
                mini_batch,
                use_dynamic_bsz=actor_config.use_dynamic_bsz,
                max_token_len_per_gpu=actor_config.ppo_max_token_len_per_gpu,
                micro_batch_size_per_gpu=actor_config.ppo_micro_batch_size_per_gpu,
            )
            before = len(engine.micro_batches)
            engine.train_batch(mini_batch, loss_function=None)
            out.append((rank, number, engine.micro_batches[before:]))
    return out


@functools.cache
def actor_config(loss_mode: str):
    """verl's actor config for a loss mode, with its default clip [0.8, 1.2] and token-mean."""
    from verl.utils.config import omega_conf_to_dataclass

    from skpo_verl.verl_config import compose_ppo_config

    config = compose_ppo_config(
        [
            f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode}",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        ]
    )
    actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
    assert (actor.clip_ratio_low, actor.clip_ratio_high, actor.loss_agg_mode) == (0.2, 0.2, "token-mean")
    return actor


def _model_log_probs(data, log_ratio_of_row):
    """verl's unpadded model output: one value per prompt + response token, response token k of a
    row at position prompt_len - 1 + k (verl left-shifts log-probs); log pi = old + log r."""
    prompt_lens = data["prompts"].offsets().diff().tolist()
    flat, positions = [], []
    for row, (prompt_len, old) in enumerate(zip(prompt_lens, data["old_log_probs"].unbind())):
        new = old + log_ratio_of_row(row, len(old))
        start = len(flat)
        flat.extend([0.0] * (prompt_len + len(old)))
        for k, value in enumerate(new.tolist()):
            flat[start + prompt_len - 1 + k] = value
        positions.append([start + prompt_len - 1 + k for k in range(len(old))])
    return torch.tensor(flat, dtype=torch.float32, requires_grad=True), positions


def loss_and_gradients(loss_mode: str, data, log_ratio_of_row):
    """verl's `ppo_loss` (through SKPO's role shim, as `engine_workers` binds it) on a micro-batch:
    (loss value, per-row gradients w.r.t. the response tokens' log pi)."""
    from verl.workers import engine_workers

    log_probs, positions = _model_log_probs(data, log_ratio_of_row)
    if loss_mode != "skpo":
        data = data.exclude("skpo_upstream_mask")
    loss, _ = engine_workers.ppo_loss(actor_config(loss_mode), {"log_probs": log_probs}, data)
    loss.backward()
    return loss.item(), [log_probs.grad[row].tolist() for row in positions]


def seeded_log_ratios(low: float, high: float, seed: int):
    """log r per token, r ~ U[low, high] from a fixed seed (row by row)."""
    generator = torch.Generator().manual_seed(seed)
    return lambda row, length: torch.log(low + (high - low) * torch.rand(length, generator=generator))


def ratio_one(row, length):
    return torch.zeros(length)
