"""The learning benchmark's report: per-step points from verl's metrics, tables and curves.

Pure pandas/numpy over what the runs logged (`skpo_verl.demo.report.read_metrics`); no run is
started here. `learning.py` writes the outputs with `write_reports`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from skpo_verl.benchmarks.learning_methods import BASELINE, TASK, Settings
from skpo_verl.demo.report import decoded_tokens, heldout_key

# 97.5% quantiles of Student's t with 1..30 degrees of freedom (the two-sided 95% interval's factor).
_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131)
_T_975 += (2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_interval(values) -> tuple[float, float]:
    """The 95% t-interval of the mean over seeds: mean -+ t(0.975, n - 1) x std(ddof = 1) / sqrt(n).

    (NaN, NaN) for fewer than 2 values; beyond 31 values the normal quantile 1.96 stands in."""
    values = np.asarray([v for v in values if not pd.isna(v)], dtype=np.float64)
    if values.size < 2:
        return math.nan, math.nan
    factor = _T_975[values.size - 2] if values.size - 1 <= len(_T_975) else 1.96
    half = factor * values.std(ddof=1) / math.sqrt(values.size)
    return float(values.mean() - half), float(values.mean() + half)


# Per-step diagnostics read from the metrics when a run logs them (NaN otherwise): the upstream rows that
# were first visits, the segment judge's agreement counts (docs/algorithm.md, "Why SKPO loses on the CPU
# tasks"), the PPO clip's activity on upstream tokens and the upstream tokens' share of the loss weight.
DIAGNOSTICS = {
    "first_visit_rate": "skpo/upstream/first_visit_rate",
    "oracle_signed_first_visit": "skpo/upstream/oracle_signed_rows_first_visit",
    "oracle_agreeing_first_visit": "skpo/upstream/oracle_agreeing_rows_first_visit",
    "oracle_signed_revisit": "skpo/upstream/oracle_signed_rows_revisit",
    "oracle_agreeing_revisit": "skpo/upstream/oracle_agreeing_rows_revisit",
    "oracle_clean_rate": "skpo/upstream/oracle_clean_rate",
    "upstream_clipfrac": "actor/skpo/loss/upstream_clipfrac",
    "upstream_weight_share": "actor/skpo/loss/upstream_weight_share",
}
LAST_STEPS = 10  # the smoother statistic: each run's mean validation over its last 10 steps


def run_points(
    by_step: dict[int, dict], settings: Settings, upfront_samples: int = 0, upfront_tokens: float = 0.0
) -> pd.DataFrame:
    """One row per step 0..steps: held-out accuracy (NaN where not validated) and cumulative costs.

    `upfront_samples` / `upfront_tokens`: answers and decoded tokens spent before training (the
    offline estimate of `skpo_offline_values`), counted at step 0."""
    missing = [step for step in range(1, settings.steps + 1) if "timing_s/step" not in by_step.get(step, {})]
    if missing:
        raise ValueError(f"training steps {missing} are missing from the metrics (the run stopped early?)")
    rows_per_step = settings.prompts_per_step * settings.group_size
    rows = []
    for step in range(settings.steps + 1):
        metrics = by_step.get(step, {})
        key = heldout_key(metrics)
        trained = step > 0
        rows.append(
            {
                "step": step,
                "heldout_accuracy": metrics[key] if key else math.nan,
                "decoded_tokens": decoded_tokens(metrics, rows_per_step) if trained else float(upfront_tokens),
                # Answers sampled: SKPO logs its own (G per prompt and stage); GRPO's are prompts x G.
                "samples": int(metrics.get("skpo/downstream/rows", rows_per_step)) if trained else int(upfront_samples),
                "step_time_s": metrics["timing_s/step"] if trained else 0.0,
                **{column: metrics.get(key, math.nan) if trained else math.nan for column, key in DIAGNOSTICS.items()},
            }
        )
    points = pd.DataFrame(rows)
    points["cumulative_tokens"] = points["decoded_tokens"].cumsum()
    points["cumulative_samples"] = points["samples"].cumsum()
    points["wall_s"] = points["step_time_s"].cumsum()
    return points


def mean_curve(points: pd.DataFrame) -> pd.DataFrame:
    """Per method and validated step: accuracy mean/min/max over seeds, mean cumulative costs."""
    validated = points.dropna(subset=["heldout_accuracy"])
    grouped = validated.groupby(["method", "step"], sort=True)
    return grouped.agg(
        accuracy=("heldout_accuracy", "mean"),
        accuracy_min=("heldout_accuracy", "min"),
        accuracy_max=("heldout_accuracy", "max"),
        cumulative_samples=("cumulative_samples", "mean"),
        cumulative_tokens=("cumulative_tokens", "mean"),
        wall_s=("wall_s", "mean"),
    ).reset_index()


def cost_to_reach(curve: pd.DataFrame, target: float) -> dict | None:
    """Samples and decoded tokens at the first validated step whose mean accuracy >= target; None if never."""
    reached = curve[curve["accuracy"] >= target - 1e-12].sort_values("step")
    if reached.empty:
        return None
    first = reached.iloc[0]
    return {
        "step": int(first["step"]),
        "samples": float(first["cumulative_samples"]),
        "tokens": float(first["cumulative_tokens"]),
    }


def seeds_reaching(points: pd.DataFrame, method: str, target: float) -> int:
    """How many of the method's seeds reach `target` on their own curve at a validated step."""
    rows = points[(points["method"] == method) & (points["heldout_accuracy"] >= target - 1e-12)]
    return int(rows["seed"].nunique())


def _ratio(reach: dict | None, base: dict, cost: str) -> float | None:
    """A method's cost to reach the target over the baseline's; None when the method never reaches it or the
    baseline's own cost is zero (its final accuracy is no better than step 0, so there is nothing to divide by)."""
    if reach is None or base[cost] == 0:
        return None
    return reach[cost] / base[cost]


def summary_table(points: pd.DataFrame, baseline: str = BASELINE) -> pd.DataFrame:
    """Per method: final accuracy mean/std/95% t-interval over seeds, cost to reach the baseline's final accuracy
    (on the mean curve, and how many seeds reach it alone), tokens per step."""
    curves = mean_curve(points)
    last_step = int(points["step"].max())
    final = points[points["step"] == last_step].groupby("method")["heldout_accuracy"]
    if baseline not in set(points["method"]):
        raise ValueError(
            f"the table's ratios are to {baseline!r}, which is not among the methods run; add it to --methods"
        )
    target = final.mean()[baseline]
    if math.isnan(target):
        raise ValueError(
            f"{baseline} has no held-out accuracy at the last step {last_step}: "
            "--steps must be a multiple of --val-every"
        )
    base = cost_to_reach(curves[curves["method"] == baseline], target)
    trained = points[points["step"] > 0]
    rows = []
    for method in dict.fromkeys(points["method"]):  # first-seen order
        reach = cost_to_reach(curves[curves["method"] == method], target)
        low, high = t_interval(
            points.loc[(points["step"] == last_step) & (points["method"] == method), "heldout_accuracy"]
        )
        rows.append(
            {
                "method": method,
                "final_accuracy_mean": final.mean()[method],
                "final_accuracy_std": final.std(ddof=1)[method] if final.count()[method] > 1 else 0.0,
                "final_accuracy_ci_low": low,
                "final_accuracy_ci_high": high,
                "seeds": int(final.count()[method]),
                "seeds_reaching": seeds_reaching(points, method, target),
                "reach_step": reach["step"] if reach else None,
                "samples_ratio": _ratio(reach, base, "samples"),
                "tokens_ratio": _ratio(reach, base, "tokens"),
                "tokens_per_step": trained.loc[trained["method"] == method, "decoded_tokens"].mean(),
                "step_time_s": trained.loc[trained["method"] == method, "step_time_s"].median(),
            }
        )
    table = pd.DataFrame(rows)
    table.attrs["target"] = target
    return table


def _format_ratio(ratio: float | None, reached: bool) -> str:
    if not reached:
        return "not reached"
    return "—" if ratio is None or pd.isna(ratio) else f"{ratio:.2f}"


def format_markdown(table: pd.DataFrame, baseline: str = BASELINE) -> str:
    target = table.attrs["target"]
    lines = [
        f"Target: {baseline}'s final held-out accuracy, {target:.1%} (mean over seeds).",
        "",
    ]
    if (table["method"] == baseline).any() and table.loc[table["method"] == baseline, "reach_step"].iloc[0] == 0:
        lines += [
            f"{baseline} ends no better than at step 0, so the costs to reach its accuracy have no ratio (—).",
            "",
        ]
    lines += [
        (
            "| method | final held-out accuracy (mean ± std) | 95% interval (t, over seeds) | seeds | step reached "
            "| samples to reach (x GRPO) | decoded tokens to reach (x GRPO) | seeds reaching alone "
            "| decoded tokens / step | median step time |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        reached = row.reach_step is not None and not pd.isna(row.reach_step)
        interval = (
            "—"
            if pd.isna(row.final_accuracy_ci_low)
            else f"[{row.final_accuracy_ci_low:.1%}, {row.final_accuracy_ci_high:.1%}]"
        )
        lines.append(
            f"| {row.method} | {row.final_accuracy_mean:.1%} ± {row.final_accuracy_std:.1%} | {interval} | {row.seeds} "
            f"| {int(row.reach_step) if reached else 'not reached'} "
            f"| {_format_ratio(row.samples_ratio, reached)} "
            f"| {_format_ratio(row.tokens_ratio, reached)} "
            f"| {row.seeds_reaching}/{row.seeds} | {row.tokens_per_step:.0f} | {row.step_time_s:.1f} s |"
        )
    return "\n".join(lines)


def early_curve_markdown(points: pd.DataFrame, last_step: int = 15) -> str:
    """Mean held-out accuracy over seeds at each validated step 0..last_step, one row per method."""
    curves = mean_curve(points)
    early = curves[curves["step"] <= last_step]
    steps = sorted(early["step"].unique())
    lines = [
        f"Held-out accuracy, mean over seeds, at the validated steps 0-{last_step}:",
        "",
        "| method | " + " | ".join(str(step) for step in steps) + " |",
        "|---|" + "---|" * len(steps),
    ]
    for method in dict.fromkeys(points["method"]):
        by_step = early[early["method"] == method].set_index("step")["accuracy"]
        lines.append(f"| {method} | " + " | ".join(f"{by_step.get(step, math.nan):.3f}" for step in steps) + " |")
    return "\n".join(lines)


def plot_curves(points: pd.DataFrame, out_dir: Path, task: str = TASK, title: str | None = None) -> list[Path]:
    """Accuracy against step, decoded tokens and wall time (mean over seeds, min-max band), one PNG each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = mean_curve(points)
    paths = []
    for x, label, name in (
        ("step", "training step", "accuracy_vs_step.png"),
        ("cumulative_tokens", "decoded tokens (cumulative, mean over seeds)", "accuracy_vs_tokens.png"),
        ("wall_s", "training wall time, s (sum of timing_s/step, mean over seeds)", "accuracy_vs_wall.png"),
    ):
        figure, axis = plt.subplots(figsize=(7, 4))
        for method in dict.fromkeys(points["method"]):  # the order of --methods
            curve = curves[curves["method"] == method]
            line = axis.plot(curve[x], curve["accuracy"], "o-", markersize=3, label=method)[0]
            axis.fill_between(
                curve[x], curve["accuracy_min"], curve["accuracy_max"], color=line.get_color(), alpha=0.15
            )
        axis.set_xlabel(label)
        axis.set_ylabel("held-out accuracy (greedy)")
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="lower right")
        axis.set_title(title or f"chain-sum task {task!r}, tiny model, CPU: mean and min-max over seeds")
        figure.tight_layout()
        paths.append(out_dir / name)
        figure.savefig(paths[-1], dpi=120)
        plt.close(figure)
    return paths


def last_steps_mean(points: pd.DataFrame, last: int = LAST_STEPS) -> pd.DataFrame:
    """Per method and seed: the mean of the run's validations in its last `last` steps (steps N - last + 1..N)."""
    final_step = int(points["step"].max())
    window = points[(points["step"] > final_step - last) & points["heldout_accuracy"].notna()]
    return window.groupby(["method", "seed"], sort=False)["heldout_accuracy"].mean().rename("last_mean").reset_index()


def paired_table(points: pd.DataFrame, baseline: str = BASELINE, early_step: int = 10) -> pd.DataFrame:
    """Per method: final accuracy and the mean of the last `LAST_STEPS` steps, each as mean +- std over seeds and
    as the paired per-seed difference to the baseline (mean and 95% t-interval over the seeds both ran), and
    the accuracy at `early_step` (mean over seeds)."""
    final_step = int(points["step"].max())
    final = points[points["step"] == final_step].set_index(["method", "seed"])["heldout_accuracy"]
    last = last_steps_mean(points).set_index(["method", "seed"])["last_mean"]
    early = points[points["step"] == early_step].groupby("method")["heldout_accuracy"].mean()
    rows = []
    for method in dict.fromkeys(points["method"]):
        row = {"method": method, "seeds": int(final[method].count()), "early": early.get(method, math.nan)}
        for name, per_seed in (("final", final), ("last", last)):
            values = per_seed[method]
            row[f"{name}_mean"], row[f"{name}_std"] = values.mean(), values.std(ddof=1) if values.count() > 1 else 0.0
            paired = (values - per_seed[baseline]).dropna()
            row[f"{name}_diff"] = paired.mean() if len(paired) else math.nan
            row[f"{name}_diff_low"], row[f"{name}_diff_high"] = t_interval(paired)
        rows.append(row)
    return pd.DataFrame(rows)


def format_paired_markdown(table: pd.DataFrame, baseline: str = BASELINE, early_step: int = 10) -> str:
    lines = [
        f"Held-out accuracy; differences are paired per seed against {baseline} (mean and 95% t-interval over seeds).",
        "",
        (
            f"| method | seeds | step {early_step} | final (mean ± std) | final − {baseline} [95% CI] "
            f"| mean of last {LAST_STEPS} steps (mean ± std) | last-{LAST_STEPS} − {baseline} [95% CI] |"
        ),
        "|---|---|---|---|---|---|---|",
    ]

    def difference(row, name):
        if pd.isna(row[f"{name}_diff"]):
            return "—"
        low, high = row[f"{name}_diff_low"], row[f"{name}_diff_high"]
        interval = "" if pd.isna(low) else f" [{low * 100:+.1f}, {high * 100:+.1f}]"
        return f"{row[f'{name}_diff'] * 100:+.1f}{interval}"

    for _, row in table.iterrows():
        lines.append(
            f"| {row['method']} | {row['seeds']} | {row['early']:.1%} "
            f"| {row['final_mean']:.1%} ± {row['final_std']:.1%} | {difference(row, 'final')} "
            f"| {row['last_mean']:.1%} ± {row['last_std']:.1%} | {difference(row, 'last')} |"
        )
    return "\n".join(lines)


def diagnostics_table(points: pd.DataFrame) -> pd.DataFrame:
    """Per method, over all its runs' steps: the share of signed upstream advantages with the judge's sign
    (first visits and revisits apart, pooled: agreeing rows / signed rows), the first-visit rate, the clean
    rate of the kept segments, and the upstream tokens' PPO clip fraction and share of the loss weight."""
    rows = []
    for method, runs in points[points["step"] > 0].groupby("method", sort=False):
        row = {"method": method}
        for kind in ("first_visit", "revisit"):
            signed = runs[f"oracle_signed_{kind}"].sum()
            row[f"agreement_{kind}"] = runs[f"oracle_agreeing_{kind}"].sum() / signed if signed else math.nan
            row[f"signed_{kind}"] = signed
        for column in ("first_visit_rate", "oracle_clean_rate", "upstream_clipfrac", "upstream_weight_share"):
            row[column] = runs[column].mean()
        rows.append(row)
    return pd.DataFrame(rows)


def format_diagnostics_markdown(table: pd.DataFrame) -> str:
    lines = [
        "Upstream diagnostics over every step of every seed (— where a method logs none):",
        "",
        (
            "| method | estimated advantage has the judge's sign: first visits (rows) | revisits (rows) "
            "| first-visit rate | clean segments | upstream clip fraction | upstream share of the loss weight |"
        ),
        "|---|---|---|---|---|---|---|",
    ]

    def share(value):
        return "—" if pd.isna(value) else f"{value:.1%}"

    for _, row in table.iterrows():
        lines.append(
            f"| {row['method']} | {share(row['agreement_first_visit'])} ({row['signed_first_visit']:.0f}) "
            f"| {share(row['agreement_revisit'])} ({row['signed_revisit']:.0f}) | {share(row['first_visit_rate'])} "
            f"| {share(row['oracle_clean_rate'])} | {share(row['upstream_clipfrac'])} "
            f"| {share(row['upstream_weight_share'])} |"
        )
    return "\n".join(lines)


def write_reports(points: pd.DataFrame, out_dir: Path, task: str = TASK, baseline: str = BASELINE) -> str:
    """points.csv, the curves, early_curve.md and, with the baseline among the methods, table.md (the summary,
    the paired table and the diagnostics); returns table.md's text ("" without the baseline)."""
    points.to_csv(out_dir / "points.csv", index=False)
    plot_curves(points, out_dir, task)
    (out_dir / "early_curve.md").write_text(early_curve_markdown(points) + "\n")
    if baseline not in set(points["method"]):
        return ""
    markdown = "\n\n".join(
        [
            format_markdown(summary_table(points, baseline), baseline),
            format_paired_markdown(paired_table(points, baseline), baseline),
            format_diagnostics_markdown(diagnostics_table(points)),
        ]
    )
    (out_dir / "table.md").write_text(markdown + "\n")
    return markdown
