"""Selecting the kept upstream segment among G candidates (docs/algorithm.md, Rollout step 4), and the second
one that `upstream_baseline=spatial` keeps (docs/algorithm.md, "Spatial upstream baseline (ours)")."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mean_nll(log_probs: Sequence[float]) -> float:
    """d(s) = -(1/|s|) sum_t log pi(s_t): mean negative log-prob of a segment's tokens."""
    log_probs = np.asarray(log_probs, dtype=np.float64)
    if log_probs.size == 0:
        raise ValueError("mean_nll of an empty segment is undefined: a candidate needs at least one token.")
    return float(-log_probs.mean())


def _as_nlls(nlls: Sequence[float]) -> np.ndarray:
    nlls = np.asarray(nlls, dtype=np.float64)
    if nlls.ndim != 1 or nlls.size == 0:
        raise ValueError(f"Selection needs a non-empty 1-D sequence of NLLs, got shape {nlls.shape}.")
    if not np.all(np.isfinite(nlls)):
        raise ValueError(f"Selection got non-finite NLLs: {nlls.tolist()}.")
    return nlls


def select_median(nlls: Sequence[float]) -> int:
    """k* = argmin_k |d_k - median_k d|, the candidate closest to the median NLL.

    For even G the median is numpy's: the mean of the two middle values, so two candidates
    can be equally close; ties go to the smallest index.

    Args:
        nlls: d_1..d_G, [G].
    """
    nlls = _as_nlls(nlls)
    return int(np.argmin(np.abs(nlls - np.median(nlls))))


def select_extreme(nlls: Sequence[float], step: int) -> int:
    """Extreme-selection ablation: argmin_k d_k on even steps, argmax_k d_k on odd steps.

    Ties go to the smallest index.
    """
    nlls = _as_nlls(nlls)
    return int(np.argmin(nlls) if step % 2 == 0 else np.argmax(nlls))


# The one selection table: rule name -> chooser(nlls, step) -> index of the kept candidate.
SELECTION_RULES = {
    "median": lambda nlls, step: select_median(nlls),
    "extreme": select_extreme,
}


def select_segment(nlls: Sequence[float], rule: str, step: int) -> int:
    """Index of the kept candidate under `rule` (a key of SELECTION_RULES)."""
    if rule not in SELECTION_RULES:
        raise ValueError(f"Unknown selection rule {rule!r}; expected one of {', '.join(SELECTION_RULES)}.")
    return SELECTION_RULES[rule](nlls, step)


# upstream_baseline=spatial (ours): rule name -> score(nlls, step) whose argmin over the candidates other than
# the first kept one is the second kept one: the next closest to the median, or the other extreme.
_SECOND_SCORES = {
    "median": lambda nlls, step: np.abs(nlls - np.median(nlls)),
    "extreme": lambda nlls, step: -nlls if step % 2 == 0 else nlls.copy(),
}
assert _SECOND_SCORES.keys() == SELECTION_RULES.keys()


def select_two_segments(nlls: Sequence[float], rule: str, step: int) -> tuple[int, int]:
    """(k_a, k_b): the two kept candidates of `upstream_baseline=spatial`, two different indices.

        k_a = select_segment(d, rule, step)
        median:   k_b = argmin_{k != k_a} |d_k - median_k d|       (the next closest to the median)
        extreme:  k_b = argmax_{k != k_a} d_k on even steps, argmin_{k != k_a} d_k on odd steps
                  (k_a is the min on even steps, the max on odd: k_b is the other extreme)

    Ties go to the smallest index. For even G the two middle candidates are equally close to numpy's
    median (their mean), so median selection keeps both of them.

    Args:
        nlls: d_1..d_K, [K], K >= 2.
    """
    nlls = _as_nlls(nlls)
    if nlls.size < 2:
        raise ValueError(f"Two kept segments need at least two candidates, got {nlls.size}.")
    first = select_segment(nlls, rule, step)
    score = _SECOND_SCORES[rule](nlls, step)
    score[first] = np.inf
    return first, int(np.argmin(score))
