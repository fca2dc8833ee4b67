"""Harness: verl's real V1 `PPOTrainer` without Ray workers, and rows as verl's agent loop stores them.

`v1_trainer` builds the trainer class from verl's config (SKPO's shims are installed on it by
the plugin) with only what the driver-side methods under test read. `Prompt` and the two
row layouts write one step's rows into TransferQueue the way `AgentLoopWorkerTQ` does
(keys `{uid}_{session_id}_{i}`, the same tags):

- SKPO (`skpo_rows`): session 0 returns [upstream, downstream_0], session i returns
  [downstream_i], so a prompt has G + 1 rows (docs/row_contract.md).
- GRPO (`grpo_rows`): one row per session, verl's default agent loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import torch

EOS = 0
STEP = 5
PROMPT_TOKEN, RESPONSE_TOKEN = 7, 8


def v1_trainer(overrides: Sequence[str] = (), step: int = STEP, dp_size: int = 1):
    """verl's PPOTrainer as `_init` leaves it for the driver-side steps (no workers, no dataloader).

    An SKPO config gets the `SKPOState` of its `algorithm.skpo` section, as the V1 shim's
    `__init__` builds it (its start-up checks are `test_validation.py`'s subject); any other
    config none, as in a GRPO run. `actor_rollout_wg` only answers the
    data-parallel size `_balance_batch` queries (`_dispatch_info`).
    """
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    from skpo_verl.config import skpo_config_from_algorithm
    from skpo_verl.training.state import SKPOState
    from skpo_verl.validation import is_skpo_run
    from skpo_verl.verl_config import compose_ppo_config

    class Trainer(PPOTrainer):
        def on_step_end(self):
            return None

        def on_sample_end(self):
            return None

    trainer = object.__new__(Trainer)
    trainer.config = compose_ppo_config(list(overrides))
    skpo = is_skpo_run(trainer.config)
    trainer.skpo_state = SKPOState(skpo_config_from_algorithm(trainer.config.algorithm)) if skpo else None
    trainer.global_steps = step
    trainer.use_critic = False
    trainer.tokenizer = SimpleNamespace(eos_token_id=EOS)
    trainer.actor_rollout_wg = SimpleNamespace(_dispatch_info={"actor": list(range(dp_size))})
    return trainer


@dataclass(frozen=True)
class Prompt:
    """One prompt's step: its G answers' rewards (+-1) and lengths, and its kept segment."""

    uid: str
    index: int  # the dataset's extra_info.index
    prompt_length: int
    rewards: tuple
    answer_lengths: tuple
    segment_length: int = 2


def _row(prompt: Prompt, session: int, prompt_length: int, response_length: int, reward: float, skpo_fields):
    prompts = torch.full((prompt_length,), PROMPT_TOKEN, dtype=torch.int64)
    responses = torch.full((response_length,), RESPONSE_TOKEN, dtype=torch.int64)
    input_ids = torch.cat([prompts, responses])
    response_mask = torch.ones(response_length, dtype=torch.int64)
    rm_scores = torch.zeros(response_length)
    rm_scores[-1] = reward  # verl's reward loop puts the score on the last response token
    row = {
        "prompts": prompts,
        "responses": responses,
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "position_ids": torch.arange(len(input_ids)),
        "response_mask": response_mask,
        "loss_mask": response_mask.clone(),
        "rollout_log_probs": torch.full((response_length,), -1.0),
        "rm_scores": rm_scores,
        "uid": prompt.uid,
        "index": prompt.index,
        "session_id": session,
        "global_steps": STEP,
    }
    row.update(skpo_fields)
    return row


def _skpo_fields(prompt: Prompt, upstream: bool) -> dict:
    return {
        "skpo_is_upstream": int(upstream),
        "skpo_split_length": prompt.segment_length + 1,
        "skpo_segment_length": prompt.segment_length,
        "skpo_segment_nll": 1.5,
        "skpo_candidate_tokens": 3 * len(prompt.rewards),
        "skpo_early_eos_candidates": 0,
        "skpo_completion_reward": 0.0,
        "skpo_completion_tokens": 0,
    }


def skpo_rows(prompts: Sequence[Prompt], conditioning: str = "skip") -> dict:
    """Row key -> fields, SKPO's layout. The downstream prompt is [s, q] (q alone if unconditional);
    the upstream row carries session 0's score, as verl's agent loop copies it."""
    rows = {}
    for p in prompts:
        answer_prompt = p.prompt_length + (0 if conditioning == "unconditional" else p.segment_length)
        upstream = _row(p, 0, p.prompt_length, p.segment_length, p.rewards[0], _skpo_fields(p, True))
        rows[f"{p.uid}_0_0"] = upstream
        for session, (reward, length) in enumerate(zip(p.rewards, p.answer_lengths)):
            key = f"{p.uid}_0_1" if session == 0 else f"{p.uid}_{session}_0"
            rows[key] = _row(p, session, answer_prompt, length, reward, _skpo_fields(p, False))
    return rows


def grpo_rows(prompts: Sequence[Prompt]) -> dict:
    """Row key -> fields, GRPO's layout: the same answers to q, one row per session."""
    return {
        f"{p.uid}_{session}_0": _row(p, session, p.prompt_length, length, reward, {})
        for p in prompts
        for session, (reward, length) in enumerate(zip(p.rewards, p.answer_lengths))
    }


def put_rows(tq, rows: dict, partition_id: str = "train"):
    """Store rows as the agent loop does; returns verl's `KVBatchMeta` for them."""
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    keys = list(rows)
    tags = []
    for key in keys:
        prompt_len, response_len = len(rows[key]["prompts"]), len(rows[key]["responses"])
        tags.append(
            {
                "status": "success",
                "prompt_len": prompt_len,
                "response_len": response_len,
                "seq_len": prompt_len + response_len,
                "global_steps": STEP,
            }
        )
    fields = list_of_dict_to_tensordict(list(rows.values()))
    tq.kv_batch_put(keys=keys, partition_id=partition_id, fields=fields, tags=tags)
    return tq.KVBatchMeta(partition_id=partition_id, keys=keys, tags=tags)


def write_old_log_probs(tq, batch, seed: int = 0) -> None:
    """Write `old_log_probs` for every row, padding included, as `_compute_old_log_prob` does
    after `_balance_batch` (seeded values in [-3, -0.5])."""
    from tensordict import TensorDict
    from verl.workers.utils.padding import response_to_nested

    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["response_mask"])
    mask = data["response_mask"]
    padded = mask.to_padded_tensor(0)
    generator = torch.Generator().manual_seed(seed)
    values = -0.5 - 2.5 * torch.rand(padded.shape, generator=generator)
    fields = TensorDict({"old_log_probs": response_to_nested(values, mask)}, batch_size=len(batch))
    tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=fields)
