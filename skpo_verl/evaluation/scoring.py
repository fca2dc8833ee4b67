"""avg@k from saved generations: SKPO's ±1 reward judges the math sets, `choice.py` MMLU-Pro,
`sandbox.py` LiveCodeBench (each benchmark's `grader` in protocol.py).

Generations file: JSON lines `{"data_source", "index", "ground_truth", "response"}`, one per
sample (written by `generate.py`, or by any other generator). avg@k of a benchmark =
100 x mean over problems of the fraction of that problem's k samples judged correct; the
per-problem counts are kept too, for pass@k and the intervals (uncertainty.py, table.py).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from skpo_verl.evaluation.choice import judge_choice
from skpo_verl.evaluation.protocol import BENCHMARKS, benchmark
from skpo_verl.evaluation.sandbox import judge_code
from skpo_verl.reward.score import DEFAULT_POOL_PROCESSES, compute_score


def read_generations(path: str) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def judge_all(generations: list[dict], threads: int = DEFAULT_POOL_PROCESSES) -> list[float]:
    """1.0 / 0.0 per generation, in order."""

    def judge(sample: dict) -> float:
        return judge_one(sample["data_source"], sample["response"], sample["ground_truth"])["acc"]

    with ThreadPoolExecutor(threads) as pool:
        return list(tqdm(pool.map(judge, generations), total=len(generations), desc="judging", unit="answer"))


def judge_one(data_source: str, response: str, ground_truth) -> dict:
    """{"acc": 1.0/0.0, "pred", "reason"} with the benchmark's grader; unknown sources are math."""
    known = {bench.data_source: bench.grader for bench in BENCHMARKS}
    grader = known.get(data_source, "math")
    if grader == "choice":
        return judge_choice(response, str(ground_truth))
    if grader == "code":
        return judge_code(response, ground_truth)
    return compute_score(data_source, response, ground_truth)


def correct_counts(
    generations: Iterable[dict], correct: Iterable[float], samples: dict[str, int] | None = None
) -> dict[str, dict]:
    """{data_source: {"samples": k, "correct": {index: right answers among the problem's k}}}.

    Every problem must have exactly k samples. samples: k per data_source; defaults to the
    paper's protocol (protocol.BENCHMARKS). The counts are what the tables' pass@k and bootstrap
    intervals are computed from (uncertainty.py).
    """
    per_problem: dict[str, dict[object, list[float]]] = defaultdict(lambda: defaultdict(list))
    for sample, value in zip(generations, correct, strict=True):
        per_problem[sample["data_source"]][sample["index"]].append(value)
    counts = {}
    for data_source, problems in per_problem.items():
        k = (samples or {}).get(data_source) or benchmark(data_source).samples
        short = {index: len(values) for index, values in problems.items() if len(values) != k}
        if short:
            raise ValueError(
                f"{data_source}: avg@{k} needs {k} samples per problem, but problems {dict(list(short.items())[:5])} "
                f"have other counts; regenerate them (skpo-evaluate generate) before scoring."
            )
        counts[data_source] = {
            "samples": k,
            "correct": {str(index): int(sum(values)) for index, values in sorted(problems.items())},
        }
    return counts


def avg_at_k(generations: Iterable[dict], correct: Iterable[float], samples: dict[str, int] | None = None) -> dict:
    """{data_source: avg@k in percent} = 100 x mean over problems of (right answers / k)."""
    return scores_from_counts(correct_counts(generations, correct, samples))


def scores_from_counts(counts: dict[str, dict]) -> dict[str, float]:
    return {
        data_source: 100.0 * sum(entry["correct"].values()) / (entry["samples"] * len(entry["correct"]))
        for data_source, entry in counts.items()
    }
