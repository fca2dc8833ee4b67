"""Appendix A.2 (Figs. 5, 6a): how often Monte Carlo estimates give group-relative advantages the right sign.

G prefixes have true success probabilities p_1..p_G. Each is continued N times; its estimate is
p̂_i = X_i / N with X_i ~ Binomial(N, p_i). Group-relative advantages are
A_i = (p_i - mean_j p_j) / std and Â_i = (p̂_i - mean_j p̂_j) / (std̂ + eps); dividing by a
positive scale never changes a sign, so only the centred values matter. A prefix's sign is
right when sign(Â_i) == sign(A_i) (an estimated advantage of exactly 0 is right only where the
true one is 0). Fig. 5 asks for all G signs right at once; Fig. 6a for each prefix's own sign,
against its distance |p_i - mean_j p_j| from the group mean.

Hand-checkable cases the tests use: for G = 2 with p_1 < p_2 all signs are right iff X_1 < X_2,
so P = sum_k P(X_2 = k) P(X_1 < k). For G = 3, p = (0.2, 0.5, 0.8), N = 1: the middle prefix
(true advantage 0) is right iff its estimate equals the mean, X = (0,0,0) or (1,1,1):
0.8·0.5·0.2 + 0.2·0.5·0.8 = 0.16; the outer ones iff they alone sit on their side,
0.8·(1 - 0.5·0.2) = 0.72.
"""

from __future__ import annotations

import itertools

import numpy as np

DEFAULT_DISTANCE_BINS = 8


def prefix_signs_correct(successes: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """successes: [..., G] integer counts X_i (same N for all); truth: [..., G] probabilities p_i (broadcast).

    Returns [..., G] booleans, per prefix. sign(p̂_i - mean p̂) is computed as sign(G X_i - sum_j X_j)
    in integers, so tied estimates give exactly 0 (float means of equal values need not); a true
    centred value within 1e-12 of 0 counts as 0.
    """
    successes = np.asarray(successes, dtype=np.int64)
    group_size = successes.shape[-1]
    estimated = np.sign(group_size * successes - successes.sum(axis=-1, keepdims=True))
    truth = np.asarray(truth, dtype=float)
    centred = truth - truth.mean(axis=-1, keepdims=True)
    true = np.where(np.abs(centred) < 1e-12, 0, np.sign(centred))
    return estimated == true


def all_signs_correct(successes: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """[...] booleans: every prefix of the group has the right sign (Fig. 5's event)."""
    return np.all(prefix_signs_correct(successes, truth), axis=-1)


def sign_accuracy(
    success: np.ndarray, continuations: int, trials: int, rng: np.random.Generator, chunk: int = 65536
) -> tuple[float, float]:
    """(P(all G signs right), its standard error) from `trials` simulated groups. success: [G]."""
    success = np.asarray(success, dtype=float)
    hits = 0
    for start in range(0, trials, chunk):
        size = min(chunk, trials - start)
        successes = rng.binomial(continuations, success, size=(size, success.size))
        hits += int(all_signs_correct(successes, success).sum())
    probability = hits / trials
    return probability, float(np.sqrt(probability * (1 - probability) / trials))


def sign_accuracy_grid(
    group_size: int, spreads: list[tuple[float, float]], continuations: list[int], trials: int, seed: int = 0
) -> list[dict]:
    """Fig. 5: one row per (spread, N): success probabilities evenly spaced over [low, high] (np.linspace)."""
    rng = np.random.default_rng(seed)
    rows = []
    for low, high in spreads:
        success = np.linspace(low, high, group_size)
        for n in continuations:
            probability, stderr = sign_accuracy(success, n, trials, rng)
            rows.append(
                {
                    "group_size": group_size,
                    "p_low": low,
                    "p_high": high,
                    "continuations": n,
                    "trials": trials,
                    "p_all_signs_right": probability,
                    "std_error": stderr,
                }
            )
    return rows


def sign_accuracy_by_distance(
    continuations: list[int],
    trials: int,
    seed: int = 0,
    probabilities: list[float] | None = None,
    group_size: int = 8,
    spread: tuple[float, float] = (0.3, 0.7),
    bins: int = DEFAULT_DISTANCE_BINS,
) -> list[dict]:
    """Fig. 6a: P(a prefix's sign is right) against its distance |p_i - mean_j p_j| from the group mean.

    With `probabilities` the group is those G prefixes in every trial and each distinct distance
    is one row (prefixes at equal distance pooled). Otherwise every trial draws G probabilities
    uniformly from `spread` and the distances are pooled into `bins` equal-width bins from 0 to the
    largest distance drawn. Rows: continuations, distance (exact, or the bin's middle),
    distance_low, distance_high, prefixes (how many prefix draws the row pools), accuracy, std_error.
    """
    rng = np.random.default_rng(seed)
    fixed = probabilities is not None
    if fixed:
        truth = np.broadcast_to(np.asarray(probabilities, dtype=float), (trials, len(probabilities)))
    else:
        low, high = spread
        truth = rng.uniform(low, high, size=(trials, group_size))
    distance = np.abs(truth - truth.mean(axis=-1, keepdims=True)).ravel()
    if fixed:
        keys = np.round(distance, 9)
        edges = np.unique(keys)
        labels = np.searchsorted(edges, keys)
        spans = [(d, d, d) for d in edges]
    else:
        edges = np.linspace(0.0, distance.max() * (1 + 1e-9), bins + 1)
        labels = np.clip(np.digitize(distance, edges) - 1, 0, bins - 1)
        spans = [((a + b) / 2, a, b) for a, b in itertools.pairwise(edges)]
    rows = []
    for n in continuations:
        correct = prefix_signs_correct(rng.binomial(n, truth), truth).ravel()
        for label, (middle, start, end) in enumerate(spans):
            pooled = correct[labels == label]
            if pooled.size == 0:
                continue
            accuracy = float(pooled.mean())
            rows.append(
                {
                    "continuations": n,
                    "distance": float(middle),
                    "distance_low": float(start),
                    "distance_high": float(end),
                    "prefixes": int(pooled.size),
                    "accuracy": accuracy,
                    "std_error": float(np.sqrt(accuracy * (1 - accuracy) / pooled.size)),
                }
            )
    return rows
