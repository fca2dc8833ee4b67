"""A local rollout server with verl's `server_manager.generate(...) -> TokenOutput` interface.

Tests and the rollout-cost benchmark run verl's agent loops against it in place of a vLLM
replica: a Hugging Face causal LM on CPU (`skpo_verl.cpu.generation.generate`) that honours
`max_tokens`, `temperature`, `top_p`, `top_k` and `logprobs`, and returns the tokens, their
log-probs, a stop reason and the weight version (`global_steps`) the way verl's client does.

It also keeps the books a rollout-cost comparison needs: tokens decoded, tokens prefilled,
and tokens a prefix cache would have served. The cache model is vLLM's automatic prefix
caching: it holds the KV of every finished sequence (prompt + generated tokens) in blocks of
`block_size` tokens, never evicts, and a request reuses the full blocks of its longest
common prefix with any cached sequence, always recomputing at least its last prompt token.
Requests run one at a time, in arrival order.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from verl.workers.rollout.replica import TokenOutput

from skpo_verl.cpu.generation import generate


@dataclass
class ServerStats:
    requests: int = 0
    decoded_tokens: int = 0
    prefill_tokens: int = 0  # prompt tokens, every request computed from scratch
    prefill_tokens_with_reuse: int = 0  # prompt tokens left to compute after prefix-cache hits
    busy_seconds: float = 0.0


class LocalTokenServer:
    """One model, one sequence at a time, with verl's generate signature (workers/rollout/llm_server.py l.99)."""

    def __init__(
        self,
        model,
        eos_token_ids: Sequence[int],
        *,
        default_max_tokens: int,
        seed: int = 0,
        block_size: int = 16,
        global_steps: int = 0,
    ):
        self.model = model
        self.eos_token_ids = list(eos_token_ids)
        self.default_max_tokens = default_max_tokens
        self.seed = seed
        self.block_size = block_size
        self.global_steps = global_steps
        self.stats = ServerStats()
        self._cache: list[torch.Tensor] = []
        self._counter = itertools.count()
        self._lock = asyncio.Lock()

    def reset(self) -> None:
        """Forget the statistics and the prefix cache (the model and seed stay)."""
        self.stats = ServerStats()
        self._cache = []

    async def generate(
        self,
        request_id,
        *,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        audio_data: list[Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> TokenOutput:
        if image_data or video_data or audio_data:
            raise NotImplementedError("LocalTokenServer serves text prompts only")
        params = dict(sampling_params)
        max_tokens = int(params.get("max_tokens", self.default_max_tokens))
        request_seed = self.seed * 1_000_003 + next(self._counter)
        async with self._lock:
            loop = asyncio.get_running_loop()
            started = loop.time()
            result = await loop.run_in_executor(
                None,
                lambda: generate(
                    self.model,
                    prompt_ids,
                    max_tokens=max_tokens,
                    eos_token_ids=self.eos_token_ids,
                    temperature=float(params.get("temperature", 1.0)),
                    top_p=float(params.get("top_p", 1.0)),
                    top_k=int(params.get("top_k", -1)),
                    generator=torch.Generator().manual_seed(request_seed),
                ),
            )
            cached = self._cached_prefix(prompt_ids)
            self._cache.append(torch.tensor(list(prompt_ids) + result.token_ids))
            stats = self.stats
            stats.requests += 1
            stats.decoded_tokens += len(result.token_ids)
            stats.prefill_tokens += len(prompt_ids)
            stats.prefill_tokens_with_reuse += len(prompt_ids) - cached
            stats.busy_seconds += loop.time() - started
        steps = self.global_steps
        return TokenOutput(
            token_ids=result.token_ids,
            log_probs=result.log_probs if params.get("logprobs") else None,
            # vLLM reports "completed" for both EOS and max_tokens (vllm_async_server.py l.720-726).
            stop_reason="completed",
            num_preempted=0,
            extra_fields={
                "global_steps": steps,
                "min_global_steps": steps,
                "max_global_steps": steps,
                "num_cached_tokens": cached,
            },
        )

    def _cached_prefix(self, prompt_ids: Sequence[int]) -> int:
        """Prompt tokens a block-granular prefix cache serves (at least the last token is recomputed)."""
        prompt = torch.tensor(list(prompt_ids))
        longest = 0
        for sequence in self._cache:
            n = min(len(sequence), len(prompt))
            mismatch = (sequence[:n] != prompt[:n]).nonzero()
            longest = max(longest, int(mismatch[0]) if len(mismatch) else n)
        return min(longest, len(prompt) - 1) // self.block_size * self.block_size


def compose_rollout_config(model_dir: str, overrides: Sequence[str] = ()):
    """verl's composed `ppo_trainer` config for agent loops served by a local model at `model_dir`.

    `rollout.name=vllm` only satisfies the schema (nothing of vLLM is imported); `overrides`
    come last, in Hydra syntax (`+algorithm.skpo.conditioning=continual`).
    """
    from skpo_verl.verl_config import compose_ppo_config

    return compose_ppo_config(
        [f"actor_rollout_ref.model.path={model_dir}", "actor_rollout_ref.rollout.name=vllm", *overrides]
    )


def instantiate_agent_loop(agent_name: str, config, server_manager, tokenizer, hf_model_type: str = "qwen2"):
    """One agent loop as `AgentLoopWorker._run_agent_loop` builds it (agent_loop.py l.682-693): registry -> hydra."""
    import hydra
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap, _agent_loop_registry
    from verl.utils.dataset.rl_dataset import RLHFDataset

    return hydra.utils.instantiate(
        config=_agent_loop_registry[agent_name],
        trainer_config=DictConfigWrap(config=config),
        server_manager=server_manager,
        tokenizer=tokenizer,
        processor=None,
        hf_model_type=hf_model_type,
        dataset_cls=RLHFDataset,
        data_config=DictConfigWrap(config.data),
        tools=ToolListWrap([]),
    )
