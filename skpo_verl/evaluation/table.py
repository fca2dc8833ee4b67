"""Table 1 from a results file: Markdown, CSV and a bar chart.

Results file (JSON), written by `skpo-evaluate score` and re-rendered by `skpo-evaluate render`:

    {"protocol": {...sampling settings...},
     "entries": [{"base_model": "Llama-3.2-3B-Instruct", "method": "SKPO",
                  "scores": {"aime2024": 14.7, "math500": 44.8, ...}}, ...]}

One table per base model, methods in file order, one decimal, the best value of each column
in bold, missing cells as "–". Avg. is the mean of the eight benchmarks (the paper's Avg.),
shown only when all eight are present.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

from skpo_verl.evaluation.protocol import AVERAGE_COLUMN, BENCHMARKS

MISSING = "–"


def load_results(path: str) -> dict[str, Any]:
    with open(path) as handle:
        results = json.load(handle)
    for position, entry in enumerate(results.get("entries", [])):
        missing = {"base_model", "method", "scores"} - set(entry)
        if missing:
            raise ValueError(f"{path}: entry {position} lacks {', '.join(sorted(missing))}.")
    return results


def save_results(results: dict[str, Any], path: str) -> None:
    with open(path, "w") as handle:
        json.dump(results, handle, indent=2)


def add_entry(results: dict[str, Any], base_model: str, method: str, scores: dict[str, float]) -> None:
    """Insert or replace the (base_model, method) entry."""
    entries = [e for e in results.setdefault("entries", []) if (e["base_model"], e["method"]) != (base_model, method)]
    results["entries"] = entries + [{"base_model": base_model, "method": method, "scores": scores}]


def row_values(scores: dict[str, float]) -> list[float | None]:
    """The eight benchmark cells and Avg., None where missing."""
    values = [scores.get(bench.data_source) for bench in BENCHMARKS]
    average = sum(values) / len(values) if all(v is not None for v in values) else None
    return values + [average]


def grouped(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in results["entries"]:
        groups.setdefault(entry["base_model"], []).append(entry)
    return groups


def columns() -> list[str]:
    return [bench.column for bench in BENCHMARKS] + [AVERAGE_COLUMN]


def render_markdown(results: dict[str, Any]) -> str:
    protocol = ", ".join(f"{bench.column} avg@{bench.samples}" for bench in BENCHMARKS)
    parts = []
    for base_model, entries in grouped(results).items():
        rows = [row_values(entry["scores"]) for entry in entries]
        best = [max((row[i] for row in rows if row[i] is not None), default=None) for i in range(len(columns()))]
        lines = [
            f"### {base_model}",
            "",
            "| Method | " + " | ".join(columns()) + " |",
            "|---|" + "---:|" * len(columns()),
        ]
        for entry, row in zip(entries, rows):
            cells = [_cell(value, value is not None and value == best[i]) for i, value in enumerate(row)]
            lines.append(f"| {entry['method']} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + f"\n\n{protocol}; {AVERAGE_COLUMN} = mean of the {len(BENCHMARKS)}.\n"


def _cell(value: float | None, bold: bool) -> str:
    if value is None:
        return MISSING
    text = f"{value:.1f}"
    return f"**{text}**" if bold else text


def render_csv(results: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["base_model", "method", *columns()])
    for entry in results["entries"]:
        values = row_values(entry["scores"])
        writer.writerow([entry["base_model"], entry["method"], *("" if v is None else f"{v:.1f}" for v in values)])
    return buffer.getvalue()


def render_chart(results: dict[str, Any], path: str) -> None:
    """Grouped bars: one panel per base model, one bar per method and benchmark."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = grouped(results)
    figure, axes = plt.subplots(len(groups), 1, figsize=(11, 3.6 * len(groups)), squeeze=False)
    names = columns()
    for axis, (base_model, entries) in zip(axes[:, 0], groups.items()):
        width = 0.8 / len(entries)
        for offset, entry in enumerate(entries):
            values = row_values(entry["scores"])
            positions = [i + offset * width for i, v in enumerate(values) if v is not None]
            axis.bar(positions, [v for v in values if v is not None], width, label=entry["method"])
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names)
        axis.set_title(base_model)
        axis.set_ylabel("accuracy (%)")
        axis.legend(fontsize="small", ncols=min(len(entries), 5))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_all(results: dict[str, Any], out_dir: str) -> dict[str, str]:
    """table1.md, table1.csv and table1.png in out_dir; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {kind: os.path.join(out_dir, f"table1.{kind}") for kind in ("md", "csv", "png")}
    with open(paths["md"], "w") as handle:
        handle.write(render_markdown(results))
    with open(paths["csv"], "w") as handle:
        handle.write(render_csv(results))
    render_chart(results, paths["png"])
    return paths
