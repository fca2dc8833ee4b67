"""Segments of a response and the three ways the analyses condition continuations on them.

Positions are fractions of the response's characters, so every backend works without the
model's tokenizer (the paper counts tokens); a cut moves back to the nearest whitespace so no
word is split. The conditionings are the agent loop's (algorithm.skpo.conditioning):
- unconditional: the problem q alone;
- continual: q, then the segment s as the start of the answer (the continuation goes on from s);
- skip: [s, q], the segment placed before the templated problem (skip_format=tokens).
"""

from __future__ import annotations

from collections.abc import Sequence

from skpo_verl.evaluation.backends import Request
from skpo_verl.evaluation.scoring import judge_one

CONDITIONINGS = ("unconditional", "continual", "skip")


def cut(text: str, fraction: float) -> str:
    """The first `fraction` of text, ending before a whitespace (or the raw cut if there is none)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"a segment position must lie in [0, 1], got {fraction}.")
    end = round(len(text) * fraction)
    if end >= len(text):
        return text
    space = max(text.rfind(" ", 0, end + 1), text.rfind("\n", 0, end + 1))
    return text[:space] if space > 0 else text[:end]


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
