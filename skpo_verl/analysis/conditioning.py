"""Segments of a response and the three ways the analyses condition continuations on them.

Positions are fractions of the response's *tokens*, counted with the policy's tokenizer (the paper
counts tokens): a segment at position f is the text of the response's first round(f x n) tokens,
cut at that token's end through the tokenizer's offsets (so no bytes are re-decoded). The
conditionings are the agent loop's (algorithm.skpo.conditioning):
- unconditional: the problem q alone;
- continual: q, then the segment s as the start of the answer (the continuation goes on from s);
- skip: [s, q], the segment placed before the templated problem (skip_format=tokens).
"""

from __future__ import annotations

from collections.abc import Sequence

from skpo_verl.evaluation.backends import Request
from skpo_verl.evaluation.scoring import judge_one

CONDITIONINGS = ("unconditional", "continual", "skip")


def load_segment_tokenizer(path: str | None, what: str = "--tokenizer"):
    """The fast tokenizer that counts a response's tokens (its offsets place each cut)."""
    if not path:
        raise ValueError(f"segments are cut at token positions: pass {what} PATH (the policy's tokenizer).")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{what} {path}: a fast (Rust) tokenizer is needed for token offsets; this one is not.")
    return tokenizer


def token_cut(text: str, fraction: float, tokenizer) -> tuple[str, int]:
    """(the text of the first round(fraction x n) of text's n tokens, that token count)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"a segment position must lie in [0, 1], got {fraction}.")
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    tokens = round(len(offsets) * fraction)
    if tokens == 0:
        return "", 0
    if tokens >= len(offsets):
        return text, len(offsets)
    return text[: offsets[tokens - 1][1]], tokens


def conditioned(messages: Sequence[dict], segment: str, conditioning: str, seed: int) -> Request:
    messages = tuple(dict(m) for m in messages)
    if conditioning == "unconditional":
        return Request(messages=messages, seed=seed)
    if conditioning == "continual":
        return Request(messages=messages, prefix=segment, seed=seed)
    if conditioning == "skip":
        return Request(messages=messages, lead=segment, seed=seed)
    raise ValueError(f"conditioning {conditioning!r}: choose one of {', '.join(CONDITIONINGS)}.")


def answer_text(segment: str, continuation: str, conditioning: str) -> str:
    """What is graded: under continual conditioning the answer is the segment and its continuation."""
    return segment + continuation if conditioning == "continual" else continuation


def judge(data_source: str, response: str, ground_truth) -> tuple[float, str]:
    """(1.0/0.0, the extracted final answer) with the benchmark's evaluation grader."""
    result = judge_one(data_source, response, ground_truth)
    return float(result["acc"]), str(result.get("pred") or "")
