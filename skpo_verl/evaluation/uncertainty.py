"""How sure a Table 1 cell is: unbiased pass@k and seeded bootstrap intervals over problems.

Pure numpy, shared by `skpo-evaluate` (tables, `render --compare`) and `skpo-analyze`
(the implicit-advantage curve's band). docs/evaluation.md, "Uncertainty".

- pass@k from n samples of which c are right (Chen et al. 2021's unbiased estimator):
  pass@k = 1 - C(n - c, k) / C(n, k), the probability that k of the n samples drawn without
  replacement hold at least one right one. pass@1 = c / n, so the mean of pass@1 over
  problems is avg@n.
- Bootstrap over problems: a benchmark's score is a mean over its problems; resampling the
  problems with replacement `replicates` times gives the spread a different draw of problems
  of the same kind would give (the samples within a problem stay together). The interval is
  the 2.5th and 97.5th percentile of the replicate means. A paired bootstrap draws the same
  problems for two runs and takes the percentile interval of the replicate differences.
"""

from __future__ import annotations

import zlib
from math import comb

import numpy as np

DEFAULT_REPLICATES = 10_000
DEFAULT_CONFIDENCE = 0.95


def pass_at_k(samples: int, correct: int, k: int) -> float:
    """1 - C(n - c, k) / C(n, k): P(at least one right answer among k of the n samples), for k <= n."""
    if not 0 <= correct <= samples:
        raise ValueError(f"pass@k: {correct} right answers out of {samples} samples is impossible.")
    if not 1 <= k <= samples:
        raise ValueError(f"pass@{k} needs 1 <= k <= n = {samples} samples per problem.")
    return 1.0 - comb(samples - correct, k) / comb(samples, k)


def replicate_weights(problems: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """[replicates, problems]: how often each problem is drawn in each bootstrap resample (rows sum to problems)."""
    return rng.multinomial(problems, np.full(problems, 1.0 / problems), size=replicates)


def bootstrap_means(values: np.ndarray, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """[replicates, ...]: means over the first axis of `values` (the problems) for each resample of it."""
    values = np.asarray(values, dtype=float)
    weights = replicate_weights(values.shape[0], replicates, rng)
    return np.tensordot(weights, values, axes=(1, 0)) / values.shape[0]


def percentile_interval(
    replicate_values: np.ndarray, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[np.ndarray, np.ndarray]:
    """(low, high): the (1 - confidence)/2 and (1 + confidence)/2 quantiles over the first axis."""
    tail = (1.0 - confidence) / 2.0
    low, high = np.nanquantile(replicate_values, [tail, 1.0 - tail], axis=0)
    return low, high


def benchmark_rng(seed: int, name: str) -> np.random.Generator:
    """A generator per (seed, benchmark): adding or removing a benchmark leaves the others' intervals as they were,
    and two runs resampled with the same (seed, benchmark) draw the same problems (the paired bootstrap)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])
