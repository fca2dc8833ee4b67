"""Appendix A: how often Monte Carlo estimates give every group-relative advantage the right sign.

G prefixes have true success probabilities p_1..p_G. Each is continued N times; its estimate is
p̂_i = X_i / N with X_i ~ Binomial(N, p_i). Group-relative advantages are
A_i = (p_i - mean_j p_j) / std and Â_i = (p̂_i - mean_j p̂_j) / (std̂ + eps); dividing by a
positive scale never changes a sign, so only the centred values matter. The event studied is
"all G signs right": sign(Â_i) == sign(A_i) for every i (an estimated advantage of exactly 0
is right only where the true one is 0).

For G = 2 with p_1 < p_2 the event is X_1 < X_2, so P = sum_k P(X_2 = k) P(X_1 < k): the
hand-checkable case the tests use.
"""

from __future__ import annotations

import numpy as np


def all_signs_correct(successes: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """successes: [..., G] integer counts X_i (same N for all); truth: [G] probabilities p_i.

    Returns [...] booleans. sign(p̂_i - mean p̂) is computed as sign(G X_i - sum_j X_j) in
    integers, so tied estimates give exactly 0 (float means of equal values need not); a true
    centred value within 1e-12 of 0 counts as 0.
    """
    successes = np.asarray(successes, dtype=np.int64)
    group_size = successes.shape[-1]
    estimated = np.sign(group_size * successes - successes.sum(axis=-1, keepdims=True))
    centred = np.asarray(truth, dtype=float) - np.mean(truth)
    true = np.where(np.abs(centred) < 1e-12, 0, np.sign(centred))
    return np.all(estimated == true, axis=-1)


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
    """One row per (spread, N): success probabilities evenly spaced over [low, high] (np.linspace)."""
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
