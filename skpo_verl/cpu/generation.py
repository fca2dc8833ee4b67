"""Batched autoregressive sampling with a Hugging Face causal LM on CPU, with per-token log-probs.

This is what the CPU rollout server runs in place of vLLM. Each request carries its own
sampling parameters (`temperature`, `top_p`, `top_k`, `max_tokens`, EOS ids, random
generator); `generate_batch` decodes any number of requests together: prompts are left-padded,
the attention mask hides the padding and the position ids count only real tokens, so a
request gets the same tokens and log-probs (to float rounding) batched as alone. The log-prob
of each sampled token is taken under the temperature-scaled distribution — the quantity verl's
actor recomputes (logits / temperature) — so rollout and actor log-probs agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class SamplingRequest:
    prompt_ids: list[int]
    max_tokens: int
    eos_token_ids: Sequence[int] = ()
    temperature: float = 1.0  # 0 = greedy; its log-probs are those of the unscaled logits
    top_p: float = 1.0
    top_k: int = -1
    generator: torch.Generator | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if len(self.prompt_ids) == 0:
            raise ValueError("prompt_ids is empty")


@dataclass
class Generation:
    token_ids: list[int]
    log_probs: list[float]
    finished: bool  # True when an EOS token ended the response, False when max_tokens did
    prefill_tokens: int  # prompt tokens run through the model


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask logits outside the top-k set and outside the top-p nucleus with -inf. logits: [V]."""
    if top_k is not None and 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p
        logits = logits.clone()
        logits[order[drop]] = float("-inf")
    return logits


def _left_padded(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids [B, P] and attention_mask [B, P], prompts right-aligned."""
    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[row, width - len(prompt) :] = 1
    return input_ids, attention_mask


@torch.no_grad()
def generate_batch(model, requests: Sequence[SamplingRequest], pad_id: int = 0) -> list[Generation]:
    """Decode all `requests` together (KV-cached) until each hits EOS or its own max_tokens."""
    if not requests:
        return []
    device = next(model.parameters()).device
    input_ids, attention_mask = _left_padded([list(r.prompt_ids) for r in requests], pad_id)
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    position_ids = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
    temperatures = torch.tensor([r.temperature if r.temperature > 0 else 1.0 for r in requests], device=device)
    eos = [{int(t) for t in r.eos_token_ids} for r in requests]
    tokens: list[list[int]] = [[] for _ in requests]
    log_probs: list[list[float]] = [[] for _ in requests]
    finished = [False] * len(requests)
    active = set(range(len(requests)))
    past = None
    while active:
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, past_key_values=past)
        past = out.past_key_values
        logits = out.logits[:, -1].float()
        row_log_probs = torch.log_softmax(logits / temperatures[:, None], dim=-1)
        next_tokens = torch.full((len(requests),), pad_id, dtype=torch.long)
        for row in sorted(active):
            request = requests[row]
            if request.temperature > 0:
                probs = torch.softmax(
                    filter_logits(logits[row] / request.temperature, request.top_k, request.top_p), -1
                )
                token = int(torch.multinomial(probs, 1, generator=request.generator))
            else:
                token = int(torch.argmax(logits[row]))
            tokens[row].append(token)
            log_probs[row].append(float(row_log_probs[row, token]))
            next_tokens[row] = token
            if token in eos[row]:
                finished[row] = True
            if finished[row] or len(tokens[row]) >= request.max_tokens:
                active.discard(row)
        # Rows already done keep decoding a pad token (masked out); their outputs are not read.
        input_ids = next_tokens[:, None].to(device)
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=-1)
        position_ids = position_ids[:, -1:] + 1
    return [
        Generation(token_ids=t, log_probs=lp, finished=f, prefill_tokens=len(r.prompt_ids))
        for t, lp, f, r in zip(tokens, log_probs, finished, requests)
    ]


def generate(
    model,
    prompt_ids: Sequence[int],
    *,
    max_tokens: int,
    eos_token_ids: Sequence[int],
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = -1,
    generator: torch.Generator | None = None,
) -> Generation:
    """One request alone: `generate_batch` of one."""
    request = SamplingRequest(
        list(prompt_ids), max_tokens, eos_token_ids, temperature, top_p, top_k, generator=generator
    )
    return generate_batch(model, [request])[0]
