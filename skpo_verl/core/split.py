"""The split point t_q (docs/algorithm.md, Rollout steps 1-3): where the upstream segment ends.

t_q ~ Uniform[low * L_q, high * L_q] in integer tokens, at least 1 (paper: low = 1/6,
high = 1/2, L_q the prompt's running mean response length).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# ceil/floor tolerance: products like 6 * (1/6) may land a hair above an integer in float
# arithmetic, which must not move a bound by a whole token. Lengths are < 1e6, far above it.
_ROUNDING_TOLERANCE = 1e-9


def split_bounds(mean_length: float, low: float, high: float) -> tuple[int, int]:
    """Integer bounds [t_min, t_max] of the split length, both inclusive.

        t_min = max(1, ceil(low * L)),    t_max = max(t_min, floor(high * L))

    Rounding inward keeps every integer in the real interval [low L, high L] when that
    interval contains one; when it does not (tiny L), the range collapses to t_min.

    Args:
        mean_length: L_q >= 0, running mean response length in tokens.
        low, high: fractions of L_q, 0 < low <= high.
    """
    if not mean_length >= 0.0 or math.isinf(mean_length):
        raise ValueError(f"mean_length={mean_length} must be a finite length >= 0.")
    if not 0.0 < low <= high:
        raise ValueError(f"low={low}, high={high} must satisfy 0 < low <= high.")
    t_min = max(1, math.ceil(low * mean_length - _ROUNDING_TOLERANCE))
    t_max = max(t_min, math.floor(high * mean_length + _ROUNDING_TOLERANCE))
    return t_min, t_max


def sample_split_length(mean_length: float, low: float, high: float, rng: np.random.Generator) -> int:
    """Adaptive split: t ~ Uniform{t_min, ..., t_max} (`split_bounds`), one draw from `rng`."""
    t_min, t_max = split_bounds(mean_length, low, high)
    return int(rng.integers(t_min, t_max, endpoint=True))


def fixed_split_length(mean_length: float, low: float, high: float, step: int) -> int:
    """Fixed-split ablation: t = t_min on even steps, t_max on odd steps (`split_bounds`)."""
    t_min, t_max = split_bounds(mean_length, low, high)
    return t_min if step % 2 == 0 else t_max


def cut_early_candidate(length: int, split_length: int, ended: bool) -> int:
    """Tokens kept from one candidate segment (docs/algorithm.md, Rollout step 3).

        kept = max(1, length // 2)         if the candidate ended (EOS) within t_q tokens
        kept = min(length, split_length)   otherwise

    A candidate that ended has no unfinished reasoning to continue, so it is cut at half
    of its own length (floor, at least one token). `length` counts every generated token,
    EOS included; a candidate whose EOS is exactly token t_q also ended within t_q. One
    whose EOS came after t_q (a generator that did not stop at t_q) is cut at t_q.

    Args:
        length: tokens the candidate generated, >= 1.
        split_length: t_q >= 1.
        ended: whether the candidate emitted EOS.
    """
    if length < 1 or split_length < 1:
        raise ValueError(f"length={length} and split_length={split_length} must be >= 1.")
    if ended and length <= split_length:
        return max(1, length // 2)
    return min(length, split_length)


def next_stage_runs(
    kept_lengths: Sequence[int], next_split_length: int, response_length: int, last_ended: bool
) -> bool:
    """Whether multi-split's next stage k + 1 runs (docs/algorithm.md, "Multi-split"):

        runs  iff  not last_ended  and  |s_1| + ... + |s_k| + t_{k+1} < response_length

    The kept segments continue one another, so s_1..s_{k+1} is the beginning of one response
    and must leave at least one token of `response_length` for the rest of it. A kept segment
    that ended (its candidate emitted EOS within its split length) finished its reasoning:
    there is nothing to continue, so no later stage runs either.

    Args:
        kept_lengths: |s_1|..|s_k|, tokens of the segments kept so far (k >= 1).
        next_split_length: t_{k+1} >= 1, drawn by the split rule.
        response_length: verl's `actor_rollout_ref.rollout.response_length`.
        last_ended: whether s_k's candidate ended (EOS) within t_k.
    """
    if not kept_lengths or any(n < 1 for n in kept_lengths) or next_split_length < 1:
        raise ValueError(
            f"kept_lengths={list(kept_lengths)} must be non-empty lengths >= 1 and next_split_length="
            f"{next_split_length} >= 1."
        )
    return not last_ended and sum(kept_lengths) + next_split_length < response_length


def split_length(rule: str, mean_length: float, low: float, high: float, step: int, rng: np.random.Generator) -> int:
    """t_q under `rule` (a key of SPLIT_RULES): the one dispatch used by the driver and the agent loop.

    "adaptive" draws from `rng` (the paper); "fixed" alternates the bounds by step and ignores `rng`.
    """
    if rule == "adaptive":
        return sample_split_length(mean_length, low, high, rng)
    if rule == "fixed":
        return fixed_split_length(mean_length, low, high, step)
    raise ValueError(f"Unknown split rule {rule!r}; expected one of {', '.join(SPLIT_RULES)}.")


SPLIT_RULES = ("adaptive", "fixed")
