"""The paper's evaluation protocol (Table 1): which benchmarks, how many samples each, how each is graded."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Benchmark:
    data_source: str  # as written by data_prep, and the parquet's file name
    column: str  # Table 1 column title
    samples: int  # k in avg@k
    grader: str = "math"  # "math" (the SKPO reward), "choice" (letter A-J) or "code" (run the tests)


BENCHMARKS = (
    Benchmark("aime2024", "AIME24", 32),
    Benchmark("aime2025", "AIME25", 32),
    Benchmark("amc2023", "AMC", 3),
    Benchmark("math500", "MATH", 3),
    Benchmark("minerva", "Minerva", 3),
    Benchmark("olympiadbench", "OlympiadBench", 3),
    Benchmark("mmlu_pro", "MMLU-Pro", 3, grader="choice"),
    Benchmark("livecodebench", "LiveCodeBench", 3, grader="code"),
)
AVERAGE_COLUMN = "Avg."

# The paper states the response budget (3072) but not the sampling settings; these are the
# usual avg@k settings (docs/evaluation.md). `skpo-evaluate generate` takes each as an option.
DEFAULT_TEMPERATURE = 0.6
DEFAULT_TOP_P = 0.95
DEFAULT_MAX_TOKENS = 3072


def benchmark(data_source: str) -> Benchmark:
    for bench in BENCHMARKS:
        if bench.data_source == data_source:
            return bench
    raise ValueError(
        f"{data_source!r} is not a Table 1 benchmark; expected one of {', '.join(b.data_source for b in BENCHMARKS)}."
    )


def held_out_set(data_source: str, samples: int = 1) -> Benchmark:
    """A held-out set outside Table 1, e.g. a training task's validation parquet (`generate --data-file`):
    graded by the SKPO reward like the math benchmarks, `samples` answers per problem, not in the tables."""
    if samples < 1:
        raise ValueError(f"--samples must be >= 1, got {samples}.")
    return Benchmark(data_source, data_source, samples)
