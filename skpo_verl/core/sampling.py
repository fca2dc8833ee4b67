"""SPO's prioritized prompt sampling (docs/algorithm.md, Sampling): favour prompts the policy half-solves.

Framework-free: no torch import; `skpo_verl.training.sampler` wraps it as a torch Sampler.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import numpy as np

from skpo_verl.core.tracker import BetaTracker


def priority_weights(values: np.ndarray, eps: float) -> np.ndarray:
    """p(q) = w(q) / sum_q' w(q'),  w(q) = sqrt(V(q) (1 - V(q))) + eps.

    V in tracker space, clipped into [0, 1] first; eps > 0 keeps solved (V = 1) and
    hopeless (V = 0) prompts reachable. V = 0.5 (unseen) has the largest weight, 0.5 + eps.

    Args:
        values: V, [N].
        eps: > 0 (paper: 0.05).
    Returns:
        p, float64 [N], sums to 1.
    """
    if not eps > 0.0:
        raise ValueError(f"eps={eps} must be > 0.")
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"priority_weights needs a non-empty 1-D array of values, got shape {values.shape}.")
    weights = np.sqrt(values * (1.0 - values)) + eps
    return weights / weights.sum()


class PrioritizedPromptSampler:
    """Draws dataset positions 0..N-1 with replacement, P(i) = priority_weights(V(key_i)).

    Each draw reads the tracker's current values: the weights are recomputed whenever the
    tracker's `version` changed since the last draw (O(N) numpy), so updates between draws
    take effect on the next draw. One epoch (`__iter__`) yields N positions.

    Resume: `state_dict` captures the RNG state and how many positions this epoch has
    yielded. After `load_state_dict` (and with the tracker restored to the same state), the
    next `__iter__` yields exactly the positions the interrupted epoch would have yielded
    next, then later epochs continue the same stream.
    """

    def __init__(self, prompt_keys: Sequence[Hashable], tracker: BetaTracker, eps: float, seed: int):
        if len(prompt_keys) == 0:
            raise ValueError("PrioritizedPromptSampler needs at least one prompt.")
        if not eps > 0.0:
            raise ValueError(f"eps={eps} must be > 0.")
        self._prompt_keys = list(prompt_keys)
        self._tracker = tracker
        self._eps = eps
        self._rng = np.random.default_rng(seed)
        self._drawn = 0  # positions yielded in the current epoch
        self._cdf_version: int | None = None
        self._cdf = np.empty(0)

    def __len__(self) -> int:
        return len(self._prompt_keys)

    def _current_cdf(self) -> np.ndarray:
        if self._cdf_version != self._tracker.version:
            weights = priority_weights(self._tracker.values(self._prompt_keys), self._eps)
            self._cdf = np.cumsum(weights)
            self._cdf_version = self._tracker.version
        return self._cdf

    def _draw(self) -> int:
        """Inverse-CDF draw: the first position whose cumulative weight exceeds u ~ U[0, total)."""
        cdf = self._current_cdf()
        u = self._rng.random() * cdf[-1]
        return min(int(np.searchsorted(cdf, u, side="right")), len(cdf) - 1)

    def __iter__(self) -> Iterator[int]:
        while self._drawn < len(self):
            position = self._draw()
            self._drawn += 1
            yield position
        self._drawn = 0

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._rng.bit_generator.state, "drawn": self._drawn, "num_prompts": len(self)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["num_prompts"] != len(self):
            raise ValueError(
                f"Sampler state was saved for {state['num_prompts']} prompts but this dataset has {len(self)}; "
                "resume with the same training data."
            )
        self._rng.bit_generator.state = state["rng"]
        self._drawn = int(state["drawn"])
