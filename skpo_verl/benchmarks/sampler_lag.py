"""How stale are the prioritized sampler's weights? Steps from a tracker update to the first draw that uses it.

verl's train dataloader (torchdata's StatefulDataLoader) draws sampler indices in the driver
when it hands a batch of indices to a loader; with `num_workers = W > 0` it keeps
`W x prefetch_factor` batches in flight, so the prompts of step k are drawn while step
k - W x prefetch_factor trains. The prioritized sampler reads the value tracker at each draw,
so its weights lag by that many steps. This script drives the real dataloader the way the V1
trainer does (one batch per step, one tracker update per step after the batch) and prints,
for each setting, the largest lag seen: 1 means every draw sees the update of the step before.

    python -m skpo_verl.benchmarks.sampler_lag
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from skpo_verl.core.tracker import BetaTracker
from skpo_verl.training.sampler import PrioritizedSampler


class _VersionRecordingSampler(PrioritizedSampler):
    """The project's sampler, recording the tracker version each draw was made with."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.draw_versions: list[int] = []

    def __iter__(self) -> Iterator[int]:
        for position in super().__iter__():
            self.draw_versions.append(self._sampler._tracker.version)
            yield position


class _Positions:
    """A dataset whose items are their own positions (loading cost is not what is measured)."""

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, item: int) -> int:
        return item


def measure_lag(num_workers: int, steps: int = 24, batch_size: int = 4, prefetch_factor: int = 2) -> int:
    """Largest number of steps between a tracker update and the first draw that uses it."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    tracker = BetaTracker(initial_value=0.5)
    keys = list(range(batch_size * (steps + 16)))
    sampler = _VersionRecordingSampler(keys, tracker, eps=0.05, seed=0)
    loader = StatefulDataLoader(
        _Positions(len(keys)),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        prefetch_factor=prefetch_factor if num_workers else None,
        drop_last=True,
    )
    return lag_of_training_loop(loader, sampler, tracker, steps, batch_size)


def lag_of_training_loop(loader, sampler, tracker: BetaTracker, steps: int, batch_size: int) -> int:
    """Step k takes a batch, then updates the tracker once (as the estimator does after rollout)."""
    start = tracker.version
    iterator = iter(loader)
    lags = []
    for step in range(1, steps + 1):
        next(iterator)
        versions = sampler.draw_versions[(step - 1) * batch_size : step * batch_size]
        visible = min(versions) - start  # updates this batch's draws saw
        # The newest update it could have seen is the one of step - 1; the first draw using
        # the update of step j is at step j + lag.
        if step > 1:
            lags.append(step - visible)
        tracker.update(f"prompt-{step}", 1.0, 0.96, step)
    return max(lags)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24)
    args = parser.parse_args(argv)
    for workers in (0, 2, 8):
        print(
            f"data.dataloader_num_workers={workers} (prefetch_factor 2): lag {measure_lag(workers, args.steps)} step(s)"
        )
    print("skpo_verl's V1 trainer shim builds the train dataloader with 0 workers when prioritized sampling is on.")


if __name__ == "__main__":
    main()
