"""The `hf_cpu` rollout backend: verl's token-in-token-out server contract, served on the
host by a Hugging Face model (`actor_rollout_ref.rollout.name=hf_cpu`).

Three pieces mirror what verl 0.9.1 does for vLLM (`workers/rollout/vllm_rollout/`):
- `HFCPUServer`, a Ray actor holding the HF model. Its `generate` has the signature and
  return type of `vLLMHttpServer.generate` (`TokenOutput`), honouring `max_tokens`,
  temperature/top-p/top-k and `logprobs`, and its control methods (sleep, wake_up,
  abort, KV-cache calls) are the ones `RolloutReplica` forwards.
- `HFCPUReplica`, the `RolloutReplica` that launches one server per replica, on the node
  of the replica's first training worker (hybrid mode: rollout shares the trainer's ranks).
- `HFCPUServerAdapter`, the in-worker `BaseRollout` that `ActorRolloutRefWorker` builds
  (`workers/engine_workers.py` l.667) and that receives the actor's weights after every
  update (`update_weights`, l.804) and forwards them to the server.

Requests that wait together are decoded together (dynamic batching, `generate_batch`): a
tiny model costs about the same per decoding step for 1 or 64 sequences. The server keeps no
cache between batches (a batch's KV cache lives only while it is decoded), so the KV-cache
control methods have nothing to free.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import ray
import torch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutMode, RolloutReplica, TokenOutput

from skpo_verl.cpu import ROLLOUT_NAME
from skpo_verl.cpu.generation import Generation, SamplingRequest, generate_batch

logger = logging.getLogger(__name__)

# Keys of verl's sampling_params (experimental/agent_loop/agent_loop.py l.590, agent loops'
# own additions) that the HF sampler implements; anything else is refused by name.
_SAMPLING_KEYS = {"temperature", "top_p", "top_k", "logprobs", "repetition_penalty", "ignore_eos", "seed"}


def server_name(replica_rank: int) -> str:
    """Ray actor name of a replica's server; the adapter finds its server by this name."""
    return f"{ROLLOUT_NAME}_server_{replica_rank}"


def _eos_token_ids(model, tokenizer) -> list[int]:
    """EOS ids the way vLLM gathers them: generation config, model config and tokenizer."""
    ids = set()
    for source in (model.generation_config.eos_token_id, model.config.eos_token_id, tokenizer.eos_token_id):
        if source is None:
            continue
        ids.update([source] if isinstance(source, int) else source)
    if not ids:
        raise ValueError("the model defines no EOS token (generation_config, config and tokenizer all lack one)")
    return sorted(ids)


@dataclass
class _Waiting:
    request: SamplingRequest
    want_log_probs: bool
    done: asyncio.Future  # resolves to (Generation, weight version it was decoded with)


class HFCPUServer:
    """Generates with a Hugging Face causal LM on the host; one per rollout replica.

    `generate` queues its request; one batching task decodes every request waiting at that
    moment in one `generate_batch` call, then the ones that arrived meanwhile, and so on.
    Decoding runs on the actor's event loop, so a weight update never overlaps a batch.
    """

    def __init__(self, config, model_path: str, trust_remote_code: bool, replica_rank: int):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.config = config
        self.replica_rank = replica_rank
        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=torch.float32, attn_implementation="eager", trust_remote_code=trust_remote_code
        ).eval()
        tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self.eos_token_ids = _eos_token_ids(self.model, tokenizer)
        self.max_model_len = min(
            config.max_model_len or config.prompt_length + config.response_length,
            self.model.config.max_position_embeddings,
        )
        self.generator = torch.Generator().manual_seed(config.seed + replica_rank)
        # Weights as loaded from the model path count as version 0 until the trainer syncs.
        self.global_steps = 0
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._waiting: list[_Waiting] = []
        self._batcher: asyncio.Task | None = None
        self.batch_sizes: list[int] = []  # requests per decoded batch, in order (tests, benchmark)

    def _max_tokens(self, sampling_params: dict, prompt_len: int) -> int:
        """`vLLMHttpServer.generate`'s rule: requested or configured length, clamped to the context."""
        room = self.max_model_len - prompt_len
        if room < 1:
            raise ValueError(
                f"Prompt length ({prompt_len}) leaves no room to generate within the model's maximum "
                f"context length ({self.max_model_len})."
            )
        if "max_tokens" in sampling_params:
            requested = sampling_params.pop("max_tokens")
        elif "max_new_tokens" in sampling_params:
            requested = sampling_params.pop("max_new_tokens")
        else:
            requested = min(
                self.config.response_length, self.config.prompt_length + self.config.response_length - prompt_len
            )
        return max(1, min(int(requested), room))

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        audio_data: list[Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
        priority: int = 0,
    ) -> TokenOutput:
        if image_data is not None or video_data is not None or audio_data is not None:
            raise NotImplementedError("the hf_cpu rollout serves text-only models")
        params = dict(sampling_params)
        max_tokens = self._max_tokens(params, len(prompt_ids))
        unknown = set(params) - _SAMPLING_KEYS
        if unknown:
            raise ValueError(f"hf_cpu rollout: unsupported sampling_params {sorted(unknown)}")
        if params.get("repetition_penalty", 1.0) != 1.0:
            raise NotImplementedError("hf_cpu rollout: repetition_penalty other than 1.0")
        generator = self.generator
        if params.get("seed") is not None:
            generator = torch.Generator().manual_seed(int(params["seed"]))
        request = SamplingRequest(
            [int(t) for t in prompt_ids],
            max_tokens=max_tokens,
            eos_token_ids=[] if params.get("ignore_eos", False) else self.eos_token_ids,
            temperature=float(params.get("temperature", 1.0)),
            top_p=float(params.get("top_p", 1.0)),
            top_k=int(params.get("top_k", -1)),
            generator=generator,
        )
        waiting = _Waiting(request, bool(params.get("logprobs")), asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.create_task(self._serve_waiting())
        result, version = await waiting.done
        return TokenOutput(
            token_ids=result.token_ids,
            log_probs=result.log_probs if waiting.want_log_probs else None,
            # vLLM's contract: "completed" whether EOS or max_tokens ended the response.
            stop_reason="completed",
            extra_fields={"global_steps": version, "min_global_steps": version, "max_global_steps": version},
        )

    async def _serve_waiting(self) -> None:
        """Decode the waiting requests in batches until none is left."""
        while self._waiting:
            # One turn of the event loop lets requests delivered together all join this batch.
            await asyncio.sleep(0)
            batch, self._waiting = self._waiting, []
            version = self.global_steps
            try:
                results: list[Generation] = generate_batch(self.model, [w.request for w in batch], self.pad_token_id)
            except Exception as error:  # noqa: BLE001 - every waiting caller gets the error, none hangs
                for waiting in batch:
                    if not waiting.done.done():
                        waiting.done.set_exception(error)
                continue
            self.batch_sizes.append(len(batch))
            for waiting, result in zip(batch, results):
                if not waiting.done.done():
                    waiting.done.set_result((result, version))

    async def update_weights(self, state_dict: dict[str, torch.Tensor], global_steps: int | None) -> None:
        """Install the actor's full weights (HF names) and the training step they come from."""
        missing, unexpected = self.model.load_state_dict(state_dict, strict=False)
        tied = {"lm_head.weight"} if self.model.config.tie_word_embeddings else set()
        if unexpected or set(missing) - tied:
            raise ValueError(
                f"hf_cpu rollout: actor weights do not match the rollout model "
                f"(missing {sorted(set(missing) - tied)}, unexpected {sorted(unexpected)})"
            )
        if global_steps is not None:
            self.global_steps = int(global_steps)

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = int(global_steps)

    async def get_global_steps(self) -> int:
        return self.global_steps

    async def get_batch_sizes(self) -> list[int]:
        return list(self.batch_sizes)

    async def wake_up(self, tags: list[str] | None = None) -> None:
        """Weights stay in host memory; nothing to restore."""

    async def sleep(self) -> None:
        """Weights stay in host memory; nothing to release."""

    async def clear_kv_cache(self) -> None:
        """No KV cache outlives a request."""

    async def release_kv_cache(self) -> None:
        """No KV cache outlives a request."""

    async def resume_kv_cache(self) -> None:
        """No KV cache outlives a request."""

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict:
        # Only verl's async trainers abort; the hybrid (sync) trainer this backend serves never
        # does. A control call runs between two batches (decoding blocks the event loop), so
        # no request is ever mid-decode when it arrives.
        return {"aborted_count": 0, "request_ids": []}

    async def resume_generation(self) -> None:
        """Generation is never paused (see abort_all_requests)."""

    async def start_profile(self, **kwargs) -> None:
        """No engine profiler."""

    async def stop_profile(self) -> None:
        """No engine profiler."""


class HFCPUReplica(RolloutReplica):
    """One `HFCPUServer` per replica, colocated with the replica's training workers."""

    async def launch_servers(self):
        if self.rollout_mode != RolloutMode.HYBRID or self.is_reward_model or self.is_teacher_model:
            raise NotImplementedError(
                f"rollout.name={ROLLOUT_NAME} serves the policy in hybrid mode only (rollout on the training "
                f"workers, as in the sync trainer); got mode {self.rollout_mode}, reward model "
                f"{self.is_reward_model}, teacher {self.is_teacher_model}."
            )
        node_id = await self.workers[0].__ray_call__.remote(lambda worker: ray.get_runtime_context().get_node_id())
        name = server_name(self.replica_rank)
        server = (
            ray.remote(HFCPUServer)
            .options(
                scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                    node_id=node_id, soft=False
                ),
                name=name,
                max_concurrency=self.max_concurrency,
            )
            .remote(
                config=self.config,
                model_path=self.model_config.path,
                trust_remote_code=self.model_config.get("trust_remote_code", False),
                replica_rank=self.replica_rank,
            )
        )
        self.servers = [server]
        self._server_handle = server
        # There is no HTTP endpoint; verl's load balancer only uses the address as a key.
        self._server_address = name


class HFCPUServerAdapter(BaseRollout):
    """The training worker's handle on its replica's server: forwards weight updates."""

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ["RANK"])
        rollout_world_size = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = rank // rollout_world_size if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % rollout_world_size
        self._server = None

    def _server_handle(self):
        # The server starts after the training engine, so it is looked up on first use.
        if self._server is None:
            self._server = ray.get_actor(server_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]):
        """Weights stay in host memory; nothing to restore."""

    async def release(self):
        """Weights stay in host memory; nothing to release."""

    @torch.no_grad()
    async def update_weights(
        self,
        weights: Generator[tuple[str, torch.Tensor], None, None],
        global_steps: int | None = None,
        wire_format: str = "named_tensors",
        peft_config: dict | None = None,
        **kwargs,
    ):
        if wire_format != "named_tensors":
            raise NotImplementedError(f"{ROLLOUT_NAME} rollout receives full tensors only; got {wire_format!r}")
        if peft_config is not None:
            raise NotImplementedError(f"{ROLLOUT_NAME} rollout does not load LoRA adapters; merge them (lora.merge)")
        # Every rank drains the generator: producing each full tensor is a collective.
        state_dict = {name: tensor.detach().to("cpu", copy=True) for name, tensor in weights}
        if self.rollout_rank == 0:
            await self._server_handle().update_weights.remote(state_dict, global_steps)
