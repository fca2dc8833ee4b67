"""A task's judge of kept segments (`algorithm.skpo.segment_judge`), for the upstream diagnostics.

The chain-sum tasks know whether every completed step of a kept segment is right
(`skpo_verl.demo.task.segment_is_clean`). With a judge configured, the driver decodes each
upstream row (prompt q, segment s) and asks it; the estimator then logs how often the paper's
upstream advantage has the judge's sign, and `upstream_advantage=oracle|random` can replace the
paper's signal (docs/algorithm.md, "Why SKPO loses on the CPU tasks"). No verl import.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence

import numpy as np

SegmentJudge = Callable[[str, str], bool]


@functools.lru_cache(maxsize=4)
def load_segment_judge(path: str) -> SegmentJudge:
    """The function named by 'module:function'; a ValueError naming the key when it cannot be loaded."""
    module_name, _, name = path.partition(":")
    try:
        judge = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(
            f"algorithm.skpo.segment_judge={path!r} cannot be loaded ({error}). Name an importable "
            "'module:function', e.g. skpo_verl.demo.task:segment_is_clean."
        ) from error
    if not callable(judge):
        raise ValueError(f"algorithm.skpo.segment_judge={path!r} is not a function.")
    return judge


def judge_segments(judge: SegmentJudge, prompts: Sequence[str], segments: Sequence[str]) -> np.ndarray:
    """bool [U]: the judge's verdict on each (prompt, kept segment), True = clean."""
    if len(prompts) != len(segments):
        raise ValueError(f"{len(prompts)} prompts but {len(segments)} segments to judge.")
    return np.array([bool(judge(prompt, segment)) for prompt, segment in zip(prompts, segments)], dtype=bool)


def diagnostic_signal(mode: str, judged_clean: np.ndarray | None, seed: int, step: int) -> np.ndarray | None:
    """What replaces a = R_I - V_prev under `algorithm.skpo.upstream_advantage` (None for "paper").

        oracle:  a_j = +1 if segment j is clean, -1 if it slipped
        random:  a_j = +1 or -1 with probability 1/2 each, from a generator seeded by (seed, step)

    Either is normalised afterwards as the paper's a is. "random" draws as many signs as there are
    judged rows, so the same seed and step give the same signs on a rerun.
    """
    if mode == "paper":
        return None
    if judged_clean is None:
        raise RuntimeError(
            f"algorithm.skpo.upstream_advantage={mode} needs the segment judge's verdicts, and the driver passed none: "
            "set algorithm.skpo.segment_judge."
        )
    if mode == "oracle":
        return np.where(judged_clean, 1.0, -1.0)
    if mode == "random":
        return np.random.default_rng([seed, step]).choice([-1.0, 1.0], size=len(judged_clean))
    raise ValueError(f"unknown algorithm.skpo.upstream_advantage={mode!r}")
