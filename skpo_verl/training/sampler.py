"""SPO's prioritized prompt sampling as a stateful torch Sampler for verl's dataloader.

Wraps `skpo_verl.core.sampling.PrioritizedPromptSampler` (the pure part) so verl's
`StatefulDataLoader` saves and restores its position in `data.pt` like torchdata's own
RandomSampler; the tracker it reads is SKPO's value tracker, restored from
`skpo_state.pt`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler

from skpo_verl.core.sampling import PrioritizedPromptSampler
from skpo_verl.core.tracker import BetaTracker


class PrioritizedSampler(Sampler[int]):
    def __init__(self, prompt_keys: Sequence, tracker: BetaTracker, eps: float, seed: int):
        self._sampler = PrioritizedPromptSampler(prompt_keys, tracker, eps=eps, seed=seed)

    def __iter__(self) -> Iterator[int]:
        return iter(self._sampler)

    def __len__(self) -> int:
        return len(self._sampler)

    def state_dict(self) -> dict:
        return self._sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._sampler.load_state_dict(state)
