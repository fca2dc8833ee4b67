"""Appendix A.3 (Figs. 7, 8): per-token advantages of a group, true vs Monte Carlo vs GRPO's constant.

The paper does not publish the generator behind these figures; this is ours, stated in full
in docs/analysis.md ("What true and GRPO mean here").

**A response's value path.** The true reward of a prefix (the first t of T tokens) is its value
V(t) = P(the response ends right | its first t tokens). We model the response as a Gaussian
random walk S_t = xi_1 + ... + xi_t, xi ~ N(0, 1), that ends right iff S_T > theta, so that
V(t) = Phi((S_t - theta) / sqrt(T - t)) exactly, V(T) = 1[right], and V(0) = p0 = Phi(-theta/sqrt(T))
is the prompt's success probability, shared by the group. V is a martingale, as a value must be.
A group is G paths of one prompt. Its outcomes are free (Fig. 8: p0 ~ U(0, 1), outcomes as they
fall) or fixed to c right of G (Fig. 7: p0 ~ Beta(c + 1, G - c + 1), the prompt difficulty a
uniform prior gives after c of G right; each path drawn conditioned on its outcome as a Gaussian
bridge to an endpoint from the truncated normal).

**Advantages** at each interior position t = 1..T-1, per response i, group-relative as in Eq. 5
but in reward units (centred, not divided by the group's std: the std rescales all G values of a
position together and changes no sign, and without it the error stays in success-probability
units instead of blowing a 1e-9 difference between near-equal values up to a unit-size one):
- true: A_i(t) = V_i(t) - mean_j V_j(t);
- Monte Carlo with K continuations per prefix: Â_i(t) = X_i(t)/K - mean_j X_j(t)/K,
  X_i(t) ~ Binomial(K, V_i(t)), drawn independently per prefix;
- GRPO's constant approximation: Ã_i(t) = y_i - mean_j y_j for every t, y_i = 1[response i right]:
  the outcome broadcast to every token as the value of each of its prefixes.
Sign accuracy: the fraction of tokens with sign(estimate) == sign(A) (an estimate of exactly 0 is
right only where A is 0). All-signs rate: the fraction of (group, position) where all G tokens'
signs are right at once (Appendix A.2's event, Fig. 5). MAE: the mean of |estimate - A| over tokens.
"""

from __future__ import annotations

import numpy as np
import torch

DEFAULT_POSITIONS = 100
DEFAULT_GROUPS = 2000


def normal_cdf(x: np.ndarray) -> np.ndarray:
    return torch.special.ndtr(torch.as_tensor(np.asarray(x, dtype=np.float64))).numpy()


def normal_quantile(q: np.ndarray) -> np.ndarray:
    return torch.special.ndtri(torch.as_tensor(np.asarray(q, dtype=np.float64))).numpy()


def revealed_variance(positions: int, decisiveness: float = 1.0) -> np.ndarray:
    """tau(t) = (t / T)^gamma for t = 0..T: the share of the outcome's randomness revealed by token t.

    gamma = 1 spreads it evenly over the response; gamma > 1 keeps early prefixes near the prompt's
    success probability and decides the outcome late; gamma < 1 decides it early.
    """
    if positions < 1 or decisiveness <= 0:
        raise ValueError(f"positions ({positions}) must be >= 1 and decisiveness ({decisiveness}) > 0.")
    return (np.arange(positions + 1) / positions) ** decisiveness


def value_paths(
    p0: np.ndarray,
    group_size: int,
    positions: int,
    rng: np.random.Generator,
    outcomes: np.ndarray | None = None,
    decisiveness: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(values [groups, G, T + 1] with V(0) = p0 and V(T) = y, outcomes y [groups, G] booleans).

    The walk has independent Gaussian steps with Var(S_t) = tau(t) (revealed_variance), so S_T ~ N(0, 1),
    theta = -Phi^-1(p0) and V(t) = Phi((S_t - theta) / sqrt(1 - tau(t))).
    p0: [groups], each group's success probability. outcomes: [groups, G] to condition each path on
    its outcome, or None to let them fall (y = 1[S_T > theta]).
    """
    p0 = np.asarray(p0, dtype=float)
    if np.any((p0 <= 0) | (p0 >= 1)):
        raise ValueError("value_paths: every p0 must lie strictly between 0 and 1.")
    tau = revealed_variance(positions, decisiveness)
    theta = -normal_quantile(p0)[:, None, None]  # [groups, 1, 1]
    steps = rng.standard_normal((p0.size, group_size, positions)) * np.sqrt(np.diff(tau))
    walk = np.cumsum(steps, axis=-1)  # S_1 .. S_T
    if outcomes is None:
        outcomes = walk[..., -1] > theta[..., 0]
    else:
        outcomes = np.asarray(outcomes, dtype=bool)
        # The endpoint from N(0, 1) truncated to its side of theta, then the walk's own bridge to it
        # (for independent Gaussian steps, S_t - tau(t) S_T is independent of S_T).
        below = normal_cdf(theta[..., 0])  # P(S_T <= theta) = 1 - p0
        u = rng.random(outcomes.shape)
        quantile = np.clip(np.where(outcomes, below + (1 - below) * u, below * u), 1e-15, 1 - 1e-15)
        end = normal_quantile(quantile)[..., None]
        walk = walk + tau[1:] * (end - walk[..., -1:])
    interior = normal_cdf((walk[..., :-1] - theta) / np.sqrt(1.0 - tau[1:-1]))
    start = np.broadcast_to(p0[:, None, None], (p0.size, group_size, 1))
    values = np.concatenate([start, interior, outcomes[..., None].astype(float)], axis=-1)
    return values, outcomes


def correctness_groups(
    correct: int, groups: int, group_size: int, positions: int, rng: np.random.Generator, decisiveness: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Fig. 7's groups: `correct` of the G responses right; p0 ~ Beta(c + 1, G - c + 1)."""
    if not 0 <= correct <= group_size:
        raise ValueError(f"{correct} right answers in a group of {group_size} is impossible.")
    p0 = np.clip(rng.beta(correct + 1, group_size - correct + 1, size=groups), 1e-9, 1 - 1e-9)
    outcomes = np.zeros((groups, group_size), dtype=bool)
    outcomes[:, :correct] = True
    return value_paths(p0, group_size, positions, rng, outcomes, decisiveness)


def free_groups(
    groups: int, group_size: int, positions: int, rng: np.random.Generator, decisiveness: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Fig. 8's groups: p0 ~ U(0, 1), outcomes as they fall."""
    p0 = np.clip(rng.random(groups), 1e-9, 1 - 1e-9)
    return value_paths(p0, group_size, positions, rng, None, decisiveness)


def centred_signs(counts: np.ndarray) -> np.ndarray:
    """sign(x_i - mean_j x_j) over the group axis (-2), exactly, for integer counts."""
    counts = np.asarray(counts, dtype=np.int64)
    return np.sign(counts.shape[-2] * counts - counts.sum(axis=-2, keepdims=True))


def token_errors(values: np.ndarray, outcomes: np.ndarray, continuations: int, rng: np.random.Generator) -> dict:
    """Per-token sign correctness and absolute error of the MC and GRPO estimates.

    values: [groups, G, P] true prefix values at the evaluated positions; outcomes: [groups, G].
    Returns {"mc_sign", "grpo_sign": [groups, G, P] booleans; "mc_all_signs", "grpo_all_signs":
    [groups, P] booleans (every sign of the group right at that position); "mc_error", "grpo_error":
    [groups, G, P]}.
    """
    values = np.asarray(values, dtype=float)
    group_size = values.shape[-2]
    true = values - values.mean(axis=-2, keepdims=True)
    true_sign = np.where(np.abs(true) < 1e-12, 0, np.sign(true))
    hits = rng.binomial(continuations, values)
    mc = hits / continuations - (hits / continuations).mean(axis=-2, keepdims=True)
    y = np.asarray(outcomes, dtype=np.int64)[..., None]  # [groups, G, 1]
    grpo = (y - y.mean(axis=-2, keepdims=True)).astype(float)
    grpo_sign = np.sign(group_size * y - y.sum(axis=-2, keepdims=True))
    mc_sign = centred_signs(hits) == true_sign
    grpo_sign = np.broadcast_to(grpo_sign, values.shape) == true_sign
    return {
        "mc_sign": mc_sign,
        "grpo_sign": grpo_sign,
        "mc_all_signs": mc_sign.all(axis=-2),
        "grpo_all_signs": grpo_sign.all(axis=-2),
        "mc_error": np.abs(mc - true),
        "grpo_error": np.abs(np.broadcast_to(grpo, values.shape) - true),
    }


def interior(values: np.ndarray) -> np.ndarray:
    """The values at positions 1..T-1 (V(0) is shared by the group and V(T) is the outcome: both trivial)."""
    return values[..., 1:-1]


def correctness_panels(
    group_size: int = 8,
    positions: int = DEFAULT_POSITIONS,
    continuations: int = 8,
    groups: int = DEFAULT_GROUPS,
    seed: int = 0,
    decisiveness: float = 1.0,
) -> tuple[list[dict], list[dict]]:
    """Fig. 7: for c = 0..G right, per relative position and over all positions.

    Returns (rows per (c, position): mean true value of right and of wrong responses, MC and GRPO
    sign accuracy and MAE; rows per c over all interior positions).
    """
    rng = np.random.default_rng(seed)
    per_position, summary = [], []
    for correct in range(group_size + 1):
        values, outcomes = correctness_groups(correct, groups, group_size, positions, rng, decisiveness)
        errors = token_errors(interior(values), outcomes, continuations, rng)
        inner = interior(values)
        for t in range(inner.shape[-1]):
            right, wrong = inner[:, :correct, t], inner[:, correct:, t]
            per_position.append(
                {
                    "correct": correct,
                    "group_size": group_size,
                    "position": (t + 1) / positions,
                    "value_right": float(right.mean()) if right.size else float("nan"),
                    "value_wrong": float(wrong.mean()) if wrong.size else float("nan"),
                    **{name: float(errors[key][..., t].mean()) for name, key in _COLUMNS},
                }
            )
        summary.append(
            {
                "correct": correct,
                "group_size": group_size,
                "continuations": continuations,
                "groups": groups,
                **{name: float(errors[key].mean()) for name, key in _COLUMNS},
            }
        )
    return per_position, summary


def continuation_sweep(
    continuations: list[int],
    group_size: int = 8,
    positions: int = DEFAULT_POSITIONS,
    groups: int = DEFAULT_GROUPS,
    seed: int = 0,
    decisiveness: float = 1.0,
) -> list[dict]:
    """Fig. 8: MC sign accuracy and MAE per K on one set of free groups, beside GRPO's (the same for every K)."""
    rng = np.random.default_rng(seed)
    values, outcomes = free_groups(groups, group_size, positions, rng, decisiveness)
    rows = []
    for k in continuations:
        errors = token_errors(interior(values), outcomes, k, rng)
        rows.append(
            {
                "continuations": k,
                "group_size": group_size,
                "groups": groups,
                **{name: float(errors[key].mean()) for name, key in _COLUMNS},
            }
        )
    return rows


_COLUMNS = (
    ("mc_sign_accuracy", "mc_sign"),
    ("grpo_sign_accuracy", "grpo_sign"),
    ("mc_all_signs", "mc_all_signs"),
    ("grpo_all_signs", "grpo_all_signs"),
    ("mc_mae", "mc_error"),
    ("grpo_mae", "grpo_error"),
)
