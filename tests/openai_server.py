"""A small OpenAI-compatible server for tests: /v1/completions and /v1/chat/completions from a local HF model.

Generation is `skpo_verl.cpu.generation.generate` (the CPU rollout server's sampler), seeded per
request when the request carries a seed. For the client-side tests it can refuse its first
`fail_first` requests with 503 and it records how many requests were in flight at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from transformers import AutoModelForCausalLM, AutoTokenizer

from skpo_verl.cpu.generation import generate


@dataclass
class ServerLog:
    requests: int = 0  # answered with 200
    refused: int = 0  # answered with 503
    in_flight: int = 0
    max_in_flight: int = 0
    prompts: list = field(default_factory=list)
    authorizations: set = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def build_app(model_dir: str, model_name: str, fail_first: int = 0, delay_s: float = 0.0) -> tuple[FastAPI, ServerLog]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    log = ServerLog()
    model_lock = threading.Lock()
    app = FastAPI()

    def sample(prompt: str, body: dict) -> tuple[str, str, int, int]:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        generator = torch.Generator().manual_seed(int(body["seed"])) if body.get("seed") is not None else None
        with model_lock:
            out = generate(
                model,
                ids,
                max_tokens=int(body.get("max_tokens") or 16),
                eos_token_ids=[tokenizer.eos_token_id],
                temperature=float(body.get("temperature", 1.0)),
                top_p=float(body.get("top_p", 1.0)),
                generator=generator,
            )
        text = tokenizer.decode(out.token_ids, skip_special_tokens=True)
        return text, "stop" if out.finished else "length", len(ids), len(out.token_ids)

    def admit() -> bool:
        with log.lock:
            if log.refused < fail_first:
                log.refused += 1
                return False
            log.in_flight += 1
            log.max_in_flight = max(log.max_in_flight, log.in_flight)
            return True

    def leave() -> None:
        time.sleep(delay_s)
        with log.lock:
            log.in_flight -= 1
            log.requests += 1

    def usage(prompt_tokens: int, completion_tokens: int) -> dict:
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    def unavailable() -> JSONResponse:
        return JSONResponse({"error": {"message": "warming up", "type": "server_error"}}, status_code=503)

    def serve(prompt: str, body: dict, request: Request) -> tuple | None:
        """(text, finish reason, usage) or None when the request is to be refused with 503."""
        log.authorizations.add(request.headers.get("authorization"))
        if not admit():
            return None
        try:
            log.prompts.append(prompt)
            text, reason, prompt_tokens, completion_tokens = sample(prompt, body)
        finally:
            leave()
        return text, reason, usage(prompt_tokens, completion_tokens)

    @app.post("/v1/completions")
    def completions(body: dict, request: Request):
        served = serve(body["prompt"], body, request)
        if served is None:
            return unavailable()
        text, reason, counts = served
        return {
            "id": "cmpl-test",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model_name,
            "choices": [{"index": 0, "text": text, "finish_reason": reason, "logprobs": None}],
            "usage": counts,
        }

    @app.post("/v1/chat/completions")
    def chat(body: dict, request: Request):
        prompt = tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True, tokenize=False)
        served = serve(prompt, body, request)
        if served is None:
            return unavailable()
        text, reason, counts = served
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}],
            "usage": counts,
        }

    return app, log


class LoopbackServer:
    """uvicorn on 127.0.0.1 and a free port, in a thread; `url` is the OpenAI base URL."""

    def __init__(self, app: FastAPI):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test OpenAI server did not start")
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
