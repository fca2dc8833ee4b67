"""Autoregressive sampling with a Hugging Face causal LM on CPU, with per-token log-probs.

This is what the CPU rollout server runs in place of vLLM. It honours the sampling
parameters verl passes (`temperature`, `top_p`, `top_k`, `max_tokens`) and reports the
log-prob of each sampled token under the temperature-scaled distribution — the quantity
verl's actor recomputes (logits / temperature) — so rollout and actor log-probs agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


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


@torch.no_grad()
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
    """Sample up to `max_tokens` tokens after `prompt_ids` (KV-cached, one sequence).

    temperature == 0 means greedy decoding; its log-probs are those of the unscaled logits.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if len(prompt_ids) == 0:
        raise ValueError("prompt_ids is empty")
    device = next(model.parameters()).device
    eos = set(int(t) for t in eos_token_ids)
    input_ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    past = None
    tokens: list[int] = []
    log_probs: list[float] = []
    finished = False
    for _ in range(max_tokens):
        out = model(input_ids=input_ids, past_key_values=past, use_cache=True)
        past = out.past_key_values
        logits = out.logits[0, -1].float()
        scaled = logits / temperature if temperature > 0 else logits
        token_log_probs = torch.log_softmax(scaled, dim=-1)
        if temperature > 0:
            probs = torch.softmax(filter_logits(scaled, top_k, top_p), dim=-1)
            token = int(torch.multinomial(probs, 1, generator=generator))
        else:
            token = int(torch.argmax(logits))
        tokens.append(token)
        log_probs.append(float(token_log_probs[token]))
        if token in eos:
            finished = True
            break
        input_ids = torch.tensor([[token]], dtype=torch.long, device=device)
    return Generation(token_ids=tokens, log_probs=log_probs, finished=finished, prefill_tokens=len(prompt_ids))
