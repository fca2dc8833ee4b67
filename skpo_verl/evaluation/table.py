"""Table 1 from a results file: Markdown, CSV and a bar chart, with intervals; two runs compared.

Results file (JSON), written by `skpo-evaluate score` and re-rendered by `skpo-evaluate render`:

    {"entries": [{"base_model": "Llama-3.2-3B-Instruct", "method": "SKPO",
                  "scores": {"aime2024": 14.7, "math500": 44.8, ...},
                  "counts": {"aime2024": {"samples": 32, "correct": {"0": 5, "1": 0, ...}}, ...}}]}

`scores` holds avg@k in percent; `counts` (written by `score`, optional for hand-entered rows
such as the paper's) holds each problem's right answers among its k samples, from which
the tables add unbiased pass@k and a seeded 95% bootstrap interval over problems
(uncertainty.py). One table per base model, methods in file order, one decimal, the best
value of each column in bold, missing cells as "–". Avg. is the mean of the eight benchmarks
(the paper's Avg.), shown only when all eight are present; its interval resamples the problems
of every benchmark at once (independently per benchmark) and averages.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from skpo_verl.evaluation.protocol import AVERAGE_COLUMN, BENCHMARKS
from skpo_verl.evaluation.uncertainty import (
    DEFAULT_CONFIDENCE,
    DEFAULT_REPLICATES,
    benchmark_rng,
    bootstrap_means,
    pass_at_k,
    percentile_interval,
)

MISSING = "–"


@dataclass(frozen=True)
class Uncertainty:
    """How the intervals are drawn (`skpo-evaluate render --seed --replicates --pass-k`)."""

    seed: int = 0
    replicates: int = DEFAULT_REPLICATES
    confidence: float = DEFAULT_CONFIDENCE
    pass_k: int | None = None  # None: each benchmark's own sample count (pass@32 for AIME, pass@3 else)

    def describe(self) -> str:
        return f"{self.confidence:.0%} bootstrap interval over problems ({self.replicates} resamples, seed {self.seed})"


DEFAULT_UNCERTAINTY = Uncertainty()


@dataclass(frozen=True)
class Cell:
    """One table cell: a value in percent and, with per-problem counts, its interval."""

    value: float
    low: float | None = None
    high: float | None = None
    problems: int | None = None
    k: int | None = None  # pass@k cells: the k


@dataclass(frozen=True)
class Row:
    avg: list[Cell | None]  # the eight benchmarks, then Avg.
    passes: list[Cell | None]


def load_results(path: str) -> dict[str, Any]:
    with open(path) as handle:
        results = json.load(handle)
    for position, entry in enumerate(results.get("entries", [])):
        missing = {"base_model", "method", "scores"} - set(entry)
        if missing:
            raise ValueError(f"{path}: entry {position} lacks {', '.join(sorted(missing))}.")
        for data_source, counts in entry.get("counts", {}).items():
            total = sum(counts["correct"].values()) / (counts["samples"] * len(counts["correct"]))
            if data_source in entry["scores"] and abs(100.0 * total - entry["scores"][data_source]) > 1e-6:
                raise ValueError(
                    f"{path}: entry {position} ({entry['method']}): {data_source} scores "
                    f"{entry['scores'][data_source]} but its counts give {100.0 * total}; re-run skpo-evaluate score."
                )
    return results


def save_results(results: dict[str, Any], path: str) -> None:
    with open(path, "w") as handle:
        json.dump(results, handle, indent=2)


def add_entry(
    results: dict[str, Any],
    base_model: str,
    method: str,
    scores: dict[str, float],
    counts: dict[str, dict] | None = None,
) -> None:
    """Insert or replace the (base_model, method) entry."""
    entries = [e for e in results.setdefault("entries", []) if (e["base_model"], e["method"]) != (base_model, method)]
    entry = {"base_model": base_model, "method": method, "scores": scores}
    if counts:
        entry["counts"] = counts
    results["entries"] = entries + [entry]


def row_values(scores: dict[str, float]) -> list[float | None]:
    """The eight benchmark cells and Avg., None where missing."""
    values = [scores.get(bench.data_source) for bench in BENCHMARKS]
    average = sum(values) / len(values) if all(v is not None for v in values) else None
    return values + [average]


def problem_values(counts: dict, k: int | None = None) -> tuple[list[str], np.ndarray]:
    """(problem ids, per-problem score in percent): the fraction right (k None) or pass@k."""
    ids = sorted(counts["correct"], key=_problem_order)
    samples = counts["samples"]
    if k is None:
        values = [counts["correct"][i] / samples for i in ids]
    else:
        values = [pass_at_k(samples, counts["correct"][i], k) for i in ids]
    return ids, 100.0 * np.asarray(values, dtype=float)


def _problem_order(problem_id: str):
    return (0, int(problem_id), "") if problem_id.lstrip("-").isdigit() else (1, 0, problem_id)


def entry_row(entry: dict[str, Any], uncertainty: Uncertainty = DEFAULT_UNCERTAINTY) -> Row:
    """An entry's avg@k and pass@k cells; intervals where it has per-problem counts."""
    avg_cells: list[Cell | None] = []
    pass_cells: list[Cell | None] = []
    avg_replicates, pass_replicates = [], []
    for bench in BENCHMARKS:
        value = entry["scores"].get(bench.data_source)
        counts = entry.get("counts", {}).get(bench.data_source)
        if counts is None:
            avg_cells.append(None if value is None else Cell(value))
            pass_cells.append(None)
            avg_replicates.append(None)
            pass_replicates.append(None)
            continue
        k = uncertainty.pass_k or counts["samples"]
        cell, replicates = _interval_cell(counts, None, bench.data_source, uncertainty)
        avg_cells.append(Cell(value if value is not None else cell.value, cell.low, cell.high, cell.problems))
        avg_replicates.append(replicates)
        if k <= counts["samples"]:
            cell, replicates = _interval_cell(counts, k, bench.data_source, uncertainty)
            pass_cells.append(cell)
            pass_replicates.append(replicates)
        else:
            pass_cells.append(None)
            pass_replicates.append(None)
    avg_cells.append(_average_cell(avg_cells, avg_replicates, uncertainty))
    pass_cells.append(_average_cell(pass_cells, pass_replicates, uncertainty))
    return Row(avg_cells, pass_cells)


def _interval_cell(counts: dict, k: int | None, name: str, uncertainty: Uncertainty) -> tuple[Cell, np.ndarray]:
    _, values = problem_values(counts, k)
    replicates = bootstrap_means(values, uncertainty.replicates, benchmark_rng(uncertainty.seed, name))
    low, high = percentile_interval(replicates, uncertainty.confidence)
    return Cell(float(values.mean()), float(low), float(high), len(values), k), replicates


def _average_cell(cells: list[Cell | None], replicates: list, uncertainty: Uncertainty) -> Cell | None:
    if any(cell is None for cell in cells):
        return None
    value = sum(cell.value for cell in cells) / len(cells)
    if any(r is None for r in replicates):
        return Cell(value)
    low, high = percentile_interval(np.mean(replicates, axis=0), uncertainty.confidence)
    return Cell(value, float(low), float(high))


def grouped(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in results["entries"]:
        groups.setdefault(entry["base_model"], []).append(entry)
    return groups


def columns() -> list[str]:
    return [bench.column for bench in BENCHMARKS] + [AVERAGE_COLUMN]


def render_markdown(results: dict[str, Any], uncertainty: Uncertainty = DEFAULT_UNCERTAINTY) -> str:
    protocol = ", ".join(f"{bench.column} avg@{bench.samples}" for bench in BENCHMARKS)
    parts, with_counts = [], False
    for base_model, entries in grouped(results).items():
        rows = [entry_row(entry, uncertainty) for entry in entries]
        parts.append(_markdown_table(f"### {base_model}", entries, [row.avg for row in rows]))
        if any(cell is not None for row in rows for cell in row.passes):
            with_counts = True
            parts.append(_markdown_table(f"#### {base_model}: pass@k", entries, [row.passes for row in rows]))
    notes = f"{protocol}; {AVERAGE_COLUMN} = mean of the {len(BENCHMARKS)}."
    if with_counts:
        k = f"k = {uncertainty.pass_k}" if uncertainty.pass_k else "k = the benchmark's sample count"
        notes += (
            f"\nIn brackets: the {uncertainty.describe()}; rows scored without per-problem counts have none."
            f"\npass@k: the unbiased estimator 1 − C(n−c, k)/C(n, k) per problem (n samples, c right), {k}."
        )
    return "\n\n".join(parts) + f"\n\n{notes}\n"


def _markdown_table(title: str, entries: list[dict], rows: list[list[Cell | None]]) -> str:
    best = [max((row[i].value for row in rows if row[i] is not None), default=None) for i in range(len(columns()))]
    lines = [title, "", "| Method | " + " | ".join(columns()) + " |", "|---|" + "---:|" * len(columns())]
    for entry, row in zip(entries, rows):
        cells = [_cell(cell, cell is not None and cell.value == best[i]) for i, cell in enumerate(row)]
        lines.append(f"| {entry['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(cell: Cell | None, bold: bool) -> str:
    if cell is None:
        return MISSING
    text = f"**{cell.value:.1f}**" if bold else f"{cell.value:.1f}"
    return text if cell.low is None else f"{text} [{cell.low:.1f}, {cell.high:.1f}]"


CSV_HEADER = ["base_model", "method", "benchmark", "metric", "value", "ci_low", "ci_high", "problems"]


def render_csv(results: dict[str, Any], uncertainty: Uncertainty = DEFAULT_UNCERTAINTY) -> str:
    """One row per present cell: metric avg@k or pass@k (k written out), the interval where known."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for entry in results["entries"]:
        row = entry_row(entry, uncertainty)
        for kind, cells in (("avg", row.avg), ("pass", row.passes)):
            for i, cell in enumerate(cells):
                if cell is None:
                    continue
                samples = BENCHMARKS[i].samples if i < len(BENCHMARKS) else None
                metric = f"avg@{samples}" if kind == "avg" else f"pass@{cell.k}"
                if i == len(BENCHMARKS):
                    metric = "avg@k" if kind == "avg" else "pass@k"
                writer.writerow(
                    [
                        entry["base_model"],
                        entry["method"],
                        columns()[i],
                        metric,
                        f"{cell.value:.2f}",
                        "" if cell.low is None else f"{cell.low:.2f}",
                        "" if cell.high is None else f"{cell.high:.2f}",
                        "" if cell.problems is None else cell.problems,
                    ]
                )
    return buffer.getvalue()


def render_chart(results: dict[str, Any], path: str, uncertainty: Uncertainty = DEFAULT_UNCERTAINTY) -> None:
    """Grouped bars: one panel per base model, one bar per method and benchmark; error bars = the intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = grouped(results)
    figure, axes = plt.subplots(len(groups), 1, figsize=(11, 3.6 * len(groups)), squeeze=False)
    names = columns()
    for axis, (base_model, entries) in zip(axes[:, 0], groups.items()):
        width = 0.8 / len(entries)
        for offset, entry in enumerate(entries):
            present = [(i, cell) for i, cell in enumerate(entry_row(entry, uncertainty).avg) if cell is not None]
            # The point is the stored avg@k, the interval comes from the counts: clip float noise below 0.
            errors = np.array(
                [
                    [0.0, 0.0] if c.low is None else [max(c.value - c.low, 0.0), max(c.high - c.value, 0.0)]
                    for _, c in present
                ]
            ).reshape(-1, 2)
            axis.bar(
                [i + offset * width for i, _ in present],
                [c.value for _, c in present],
                width,
                yerr=errors.T if any(c.low is not None for _, c in present) else None,
                capsize=2,
                label=entry["method"],
            )
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names)
        axis.set_title(base_model)
        axis.set_ylabel("accuracy (%)")
        axis.legend(fontsize="small", ncols=min(len(entries), 5))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_all(results: dict[str, Any], out_dir: str, uncertainty: Uncertainty = DEFAULT_UNCERTAINTY) -> dict[str, str]:
    """table1.md, table1.csv and table1.png in out_dir; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {kind: os.path.join(out_dir, f"table1.{kind}") for kind in ("md", "csv", "png")}
    with open(paths["md"], "w") as handle:
        handle.write(render_markdown(results, uncertainty))
    with open(paths["csv"], "w") as handle:
        handle.write(render_csv(results, uncertainty))
    render_chart(results, paths["png"], uncertainty)
    return paths


# --- comparing two runs -------------------------------------------------------------------------------------------


def find_entries(results: dict[str, Any], selector: str) -> list[dict[str, Any]]:
    """The entries `selector` names: "METHOD" or "BASE_MODEL/METHOD"."""
    base_model, _, method = selector.rpartition("/")
    found = [e for e in results["entries"] if e["method"] == method and base_model in ("", e["base_model"])]
    if len(found) != 1:
        names = ", ".join(f"{e['base_model']}/{e['method']}" for e in results["entries"])
        what = "no entry" if not found else f"{len(found)} entries (add the base model: BASE_MODEL/METHOD)"
        raise ValueError(f"--compare {selector!r} names {what}; the results file has {names}.")
    return found


def compare_entries(
    a: dict[str, Any],
    b: dict[str, Any],
    uncertainty: Uncertainty = DEFAULT_UNCERTAINTY,
) -> list[dict[str, Any]]:
    """B − A per benchmark both scored with counts, with a paired bootstrap interval over their common problems.

    Each resample draws the same problems for both runs, so problem difficulty, shared by the
    two, cancels out of the difference. Problems only one run has are left out and counted.
    Avg. (when all eight benchmarks pair) averages the per-benchmark replicate differences.
    """
    rows, replicates = [], []
    for bench in BENCHMARKS:
        counts_a = a.get("counts", {}).get(bench.data_source)
        counts_b = b.get("counts", {}).get(bench.data_source)
        if counts_a is None or counts_b is None:
            continue
        by_id_a = dict(zip(*problem_values(counts_a)))
        by_id_b = dict(zip(*problem_values(counts_b)))
        common = sorted(set(by_id_a) & set(by_id_b), key=_problem_order)
        if not common:
            raise ValueError(f"{bench.data_source}: the two runs share no problem; were they scored on the same data?")
        values_a = np.array([by_id_a[i] for i in common])
        values_b = np.array([by_id_b[i] for i in common])
        diff = values_b - values_a
        draws = bootstrap_means(diff, uncertainty.replicates, benchmark_rng(uncertainty.seed, bench.data_source))
        low, high = percentile_interval(draws, uncertainty.confidence)
        replicates.append(draws)
        rows.append(
            {
                "benchmark": bench.column,
                "a": float(values_a.mean()),
                "b": float(values_b.mean()),
                "difference": float(diff.mean()),
                "ci_low": float(low),
                "ci_high": float(high),
                "problems": len(common),
                "unpaired": len(set(by_id_a) ^ set(by_id_b)),
            }
        )
    if not rows:
        raise ValueError(
            "--compare needs per-problem counts for some benchmark in both entries; re-score them with skpo-evaluate "
            "score (rows entered by hand carry none)."
        )
    if len(rows) == len(BENCHMARKS):
        low, high = percentile_interval(np.mean(replicates, axis=0), uncertainty.confidence)
        rows.append(
            {
                "benchmark": AVERAGE_COLUMN,
                "a": float(np.mean([r["a"] for r in rows])),
                "b": float(np.mean([r["b"] for r in rows])),
                "difference": float(np.mean([r["difference"] for r in rows])),
                "ci_low": float(low),
                "ci_high": float(high),
                "problems": sum(r["problems"] for r in rows),
                "unpaired": sum(r["unpaired"] for r in rows),
            }
        )
    return rows


def render_comparison(pairs: list[tuple[str, str, list[dict]]], uncertainty: Uncertainty = DEFAULT_UNCERTAINTY) -> str:
    """Markdown: one table per compared pair (label A, label B, rows of compare_entries)."""
    parts = []
    for label_a, label_b, rows in pairs:
        lines = [
            f"### {label_b} − {label_a}",
            "",
            f"| Benchmark | {label_a} | {label_b} | difference | {uncertainty.confidence:.0%} interval | problems |",
            "|---|---:|---:|---:|---|---:|",
        ]
        for row in rows:
            unpaired = f" ({row['unpaired']} unpaired left out)" if row["unpaired"] else ""
            lines.append(
                f"| {row['benchmark']} | {row['a']:.1f} | {row['b']:.1f} | {row['difference']:+.1f} | "
                f"[{row['ci_low']:+.1f}, {row['ci_high']:+.1f}] | {row['problems']}{unpaired} |"
            )
        parts.append("\n".join(lines))
    note = f"avg@k in percent; the interval is a paired {uncertainty.describe()}: both runs resample the same problems."
    return "\n\n".join(parts) + f"\n\n{note}\n"


def comparison_csv(pairs: list[tuple[str, str, list[dict]]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["a", "b", "benchmark", "value_a", "value_b", "difference", "ci_low", "ci_high", "problems"])
    for label_a, label_b, rows in pairs:
        for row in rows:
            writer.writerow(
                [label_a, label_b, row["benchmark"]]
                + [f"{row[key]:.2f}" for key in ("a", "b", "difference", "ci_low", "ci_high")]
                + [row["problems"]]
            )
    return buffer.getvalue()
