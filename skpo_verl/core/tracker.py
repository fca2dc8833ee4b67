"""Per-prompt trackers (docs/algorithm.md, Trackers): the value tracker V(q) and the length tracker L_q.

Both follow SPO's KL-adaptive Beta/EMA tracker. With a forgetting factor rho in (0, 1],

    alpha <- rho * alpha + r,    beta <- rho * beta + (1 - r),    V = alpha / (alpha + beta),

which is a discounted mean of the observations: writing S = alpha (discounted sum of r)
and N = alpha + beta (discounted observation count),

    S <- rho * S + r,    N <- rho * N + 1,    V = S / N.

The length tracker applies the same update to raw response lengths. Both therefore store
(S, N) per key; for the value tracker alpha = S and beta = N - S.

SKPO starts every prompt with zero pseudo-counts (no SPO n0 warm-up): an unseen prompt
reads the tracker's initial value, and its first observation overwrites it (N = 0 gives
V = r whatever rho is). SPO's offline warm start instead seeds a prompt with an estimated
value v0 as N0 = `prior_count(rho_min)` pseudo-observations (`seed`): S = v0 N0, N = N0.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

import numpy as np


def forgetting_factor(divergence: float, half_life: float, rho_min: float, rho_max: float) -> float:
    """rho = clip(2^(-D / D_half), rho_min, rho_max).

    Args:
        divergence: D >= 0, how far the policy moved since it last acted on the prompt
            (in the units of `half_life`, e.g. training steps).
        half_life: D_half > 0, the divergence at which the old statistics count half.
        rho_min, rho_max: bounds, 0 < rho_min <= rho_max <= 1 (paper: 0.875, 0.96).
    Returns:
        rho as a python float.
    """
    if half_life <= 0:
        raise ValueError(f"half_life={half_life} must be > 0.")
    if not 0.0 < rho_min <= rho_max <= 1.0:
        raise ValueError(f"rho_min={rho_min}, rho_max={rho_max} must satisfy 0 < rho_min <= rho_max <= 1.")
    if not divergence >= 0.0:  # also rejects NaN
        raise ValueError(f"divergence={divergence} must be >= 0.")
    return float(np.clip(2.0 ** (-divergence / half_life), rho_min, rho_max))


def logprob_divergence(log_probs_then, log_probs_now) -> float:
    """D = (1/T) sum_t |log pi_then(y_t) - log pi_now(y_t)| over one stored response y (SPO).

    Args:
        log_probs_then: [T] log-probs of y's tokens when the prompt was last trained.
        log_probs_now: [T] log-probs of the same tokens under the current policy.
    """
    then = np.asarray(log_probs_then, dtype=np.float64)
    now = np.asarray(log_probs_now, dtype=np.float64)
    if then.shape != now.shape or then.ndim != 1 or then.size == 0:
        raise ValueError(f"logprob_divergence needs two equal non-empty 1-D arrays, got {then.shape} and {now.shape}.")
    return float(np.abs(then - now).mean())


def prior_count(rho_min: float) -> float:
    """N0 = 1 / (1 - rho_min): the observation count a seeded (offline-estimated) value starts with.

    It is the count an EMA with forgetting factor rho_min settles at, sum_k rho_min^k (SPO's
    choice for its offline estimates): a seeded value weighs as much as a long history of
    observations at the fastest forgetting allowed. rho_min = 0.875 gives N0 = 8.
    """
    if not 0.0 < rho_min < 1.0:
        raise ValueError(f"rho_min={rho_min} must lie in (0, 1) for a finite prior count 1 / (1 - rho_min).")
    return 1.0 / (1.0 - rho_min)


def reward_to_tracker(r):
    """Map a reward in [-1, 1] to tracker space [0, 1]: v = (r + 1) / 2. Floats or arrays."""
    return (r + 1.0) / 2.0


def tracker_to_reward(v):
    """Map a tracker value in [0, 1] back to reward space [-1, 1]: r = 2 v - 1. Floats or arrays."""
    return 2.0 * v - 1.0


def ema_update(value: float, count: float, observation: float, rho: float) -> tuple[float, float]:
    """The EMA form of the tracker update.

        eta = 1 / (rho * N + 1),    V <- V + eta * (r - V),    N <- rho * N + 1.

    Equal to the Beta form: with V = S / N, (rho * S + r) / (rho * N + 1)
    = V + (r - V) / (rho * N + 1).

    Returns:
        (new_value, new_count).
    """
    eta = 1.0 / (rho * count + 1.0)
    return value + eta * (observation - value), rho * count + 1.0


def _plain_key(key: Hashable) -> Hashable:
    """numpy scalar keys (e.g. np.int64 from a batch column) become python scalars, so the
    state holds plain python types; equal keys hash alike either way."""
    return key.item() if isinstance(key, np.generic) else key


class _DiscountedMeanTracker:
    """Per-key discounted mean S / N with forgetting factor rho (shared by both trackers)."""

    def __init__(self, initial: float):
        self._initial = float(initial)
        self._sum: dict[Hashable, float] = {}
        self._count: dict[Hashable, float] = {}
        self._last_seen: dict[Hashable, int] = {}
        # Incremented by every change, so readers (the prompt sampler) can cache derived arrays.
        self.version = 0

    def _check_observation(self, observation: float) -> None:
        raise NotImplementedError

    def value(self, key: Hashable) -> float:
        """S / N for a seen key, else the initial value."""
        key = _plain_key(key)
        if key not in self._count:
            return self._initial
        return self._sum[key] / self._count[key]

    def values(self, keys: Iterable[Hashable]) -> np.ndarray:
        """value(key) for each key, float64 [len(keys)]."""
        return np.fromiter((self.value(key) for key in keys), dtype=np.float64)

    def count(self, key: Hashable) -> float:
        """N, the discounted number of observations (0.0 for an unseen key)."""
        return self._count.get(_plain_key(key), 0.0)

    def last_seen(self, key: Hashable) -> int | None:
        """The step of the key's last update, None if never updated."""
        return self._last_seen.get(_plain_key(key))

    def __contains__(self, key: Hashable) -> bool:
        return _plain_key(key) in self._count

    def __len__(self) -> int:
        return len(self._count)

    def seed(self, key: Hashable, value: float, count: float, step: int) -> None:
        """Start an unseen key at `value` as `count` prior observations made at `step`: S = value * count,
        N = count (SPO's offline warm start). Later updates discount them like any observation."""
        key = _plain_key(key)
        if key in self._count:
            raise ValueError(f"{type(self).__name__}: key {key!r} already has observations; seed it before any update.")
        if not count > 0:
            raise ValueError(f"seed count={count} must be > 0.")
        self._check_observation(value)
        self._sum[key] = float(value) * float(count)
        self._count[key] = float(count)
        self._last_seen[key] = int(step)
        self.version += 1

    def update(self, key: Hashable, observation: float, rho: float, step: int) -> float:
        """S <- rho * S + x, N <- rho * N + 1 (S = N = 0 for an unseen key); returns S / N."""
        if not 0.0 < rho <= 1.0:
            raise ValueError(f"rho={rho} must be in (0, 1].")
        self._check_observation(observation)
        key = _plain_key(key)
        self._sum[key] = rho * self._sum.get(key, 0.0) + float(observation)
        self._count[key] = rho * self._count.get(key, 0.0) + 1.0
        self._last_seen[key] = int(step)
        self.version += 1
        return self._sum[key] / self._count[key]

    def state_dict(self) -> dict[str, Any]:
        """Plain python lists (keys keep their int/str type; floats are float64, so a round
        trip through pickle or JSON is bit-exact)."""
        keys = list(self._count)
        return {
            "kind": type(self).__name__,
            "keys": keys,
            "sums": [self._sum[k] for k in keys],
            "counts": [self._count[k] for k in keys],
            "last_seen": [self._last_seen[k] for k in keys],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace all per-key state with `state` (from `state_dict` of the same tracker class)."""
        if state.get("kind") != type(self).__name__:
            raise ValueError(f"Cannot load a {state.get('kind')!r} state into a {type(self).__name__}.")
        keys = [_plain_key(k) for k in state["keys"]]
        columns = (state["sums"], state["counts"], state["last_seen"])
        if any(len(column) != len(keys) for column in columns):
            raise ValueError(
                f"{type(self).__name__} state is malformed: keys, sums, counts and last_seen differ in length."
            )
        self._sum = {k: float(s) for k, s in zip(keys, state["sums"])}
        self._count = {k: float(n) for k, n in zip(keys, state["counts"])}
        self._last_seen = {k: int(t) for k, t in zip(keys, state["last_seen"])}
        self.version += 1


class BetaTracker(_DiscountedMeanTracker):
    """SPO's Beta tracker of a prompt's success rate V(q) in tracker space [0, 1].

        alpha <- rho * alpha + r,  beta <- rho * beta + (1 - r),  V = alpha / (alpha + beta)

    stored as S = alpha and N = alpha + beta (module docstring). Observations r in [0, 1]
    (rewards mapped with `reward_to_tracker`).
    """

    def __init__(self, initial_value: float):
        if not 0.0 <= initial_value <= 1.0:
            raise ValueError(f"initial_value={initial_value} is in tracker space and must lie in [0, 1].")
        super().__init__(initial_value)

    def _check_observation(self, observation: float) -> None:
        if not 0.0 <= observation <= 1.0:
            raise ValueError(
                f"BetaTracker observation {observation} must lie in [0, 1]; map rewards with reward_to_tracker."
            )


class LengthTracker(_DiscountedMeanTracker):
    """Running mean response length L_q = S / N, the same update on raw lengths (no [0,1] map).

    `initial_length` (paper: 1024 tokens) is read for unseen prompts.
    """

    def __init__(self, initial_length: float):
        if not initial_length > 0:
            raise ValueError(f"initial_length={initial_length} must be > 0.")
        super().__init__(initial_length)

    def _check_observation(self, observation: float) -> None:
        if not observation >= 0.0:
            raise ValueError(f"LengthTracker observation {observation} must be a length >= 0.")
