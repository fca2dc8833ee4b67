"""The learning curve of a CPU run, read back from verl's own logged metrics.

    python -m skpo_verl.demo.report METRICS_JSONL [--out-dir DIR]

`METRICS_JSONL` is what verl's file logger wrote (`trainer.logger=[console,file]`, path from
`VERL_FILE_LOGGER_PATH`): one JSON line per `Tracking.log` call, `{"step": n, "data": {...}}`.
The table has, per step: the training reward (mean outcome of the answers: SKPO's
`skpo/downstream/reward_mean`, else verl's `critic/score/mean`), the held-out accuracy
(verl's validation, `val-core/<data_source>/acc/mean@1`, logged before training as step 0
and every `trainer.test_freq` steps) and the step time (`timing_s/step`). It is printed and
written as `curve.csv` and `curve.png` beside the metrics file (or in `--out-dir`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections import defaultdict

import pandas as pd

TRAIN_REWARD_KEYS = ("skpo/downstream/reward_mean", "critic/score/mean")
STEP_TIME_KEY = "timing_s/step"
COLUMNS = ("step", "train_reward", "heldout_accuracy", "step_time_s")


def read_metrics(path: str) -> dict[int, dict]:
    """step -> every metric logged at that step (later lines of a step update earlier ones)."""
    by_step: dict[int, dict] = defaultdict(dict)
    with open(path) as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                by_step[int(record["step"])].update(record["data"])
    return dict(by_step)


def decoded_tokens(metrics: dict, rows_per_step: int) -> float:
    """Tokens the rollout decoded in one step, from its logged metrics.

    SKPO: every prompt's candidates (`skpo/upstream/rows` x `skpo/rollout/candidate_tokens_mean`),
    the answers (`skpo/downstream/rows` x `skpo/downstream/answer_length_mean`) and, with
    `upstream_reward=own_completion`, the kept candidates' completions (`skpo/upstream/rows` x
    `skpo/rollout/completion_tokens_mean`). Otherwise `rows_per_step` (prompts x G) answers of
    `response_length/mean` tokens (verl logs only their mean length).
    """
    if "skpo/upstream/rows" in metrics:
        return (
            metrics["skpo/upstream/rows"] * metrics["skpo/rollout/candidate_tokens_mean"]
            + metrics["skpo/downstream/rows"] * metrics["skpo/downstream/answer_length_mean"]
            + metrics["skpo/upstream/rows"] * metrics.get("skpo/rollout/completion_tokens_mean", 0.0)
        )
    return rows_per_step * metrics["response_length/mean"]


def heldout_key(metrics: dict) -> str | None:
    """verl's greedy validation accuracy of the first data source it logged."""
    found = sorted(key for key in metrics if key.startswith("val-core/") and "/acc/mean@" in key)
    return found[0] if found else None


def learning_curve(by_step: dict[int, dict]) -> pd.DataFrame:
    rows = []
    for step in sorted(by_step):
        metrics = by_step[step]
        key = heldout_key(metrics)
        train_reward = next((metrics[k] for k in TRAIN_REWARD_KEYS if k in metrics), math.nan)
        rows.append(
            {
                "step": step,
                "train_reward": train_reward,
                "heldout_accuracy": metrics[key] if key else math.nan,
                "step_time_s": metrics.get(STEP_TIME_KEY, math.nan),
            }
        )
    curve = pd.DataFrame(rows, columns=list(COLUMNS))
    if curve["heldout_accuracy"].isna().all():
        raise ValueError(
            "no held-out accuracy (val-core/<data_source>/acc/mean@1) in the metrics: run with "
            "trainer.val_before_train=True and trainer.test_freq>0"
        )
    return curve


def format_table(curve: pd.DataFrame) -> str:
    def cell(value, pattern):
        return "" if pd.isna(value) else pattern.format(value)

    lines = [f"{'step':>4}  {'train reward':>12}  {'held-out acc':>12}  {'step time':>9}"]
    for row in curve.itertuples():
        lines.append(
            f"{row.step:>4}  {cell(row.train_reward, '{:+.2f}'):>12}  "
            f"{cell(row.heldout_accuracy, '{:.0%}'):>12}  {cell(row.step_time_s, '{:.1f} s'):>9}"
        )
    return "\n".join(lines)


def plot(curve: pd.DataFrame, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    validated = curve.dropna(subset=["heldout_accuracy"])
    axis.plot(validated["step"], validated["heldout_accuracy"], "o-", label="held-out accuracy (greedy)")
    trained = curve.dropna(subset=["train_reward"])
    axis.plot(trained["step"], (trained["train_reward"] + 1) / 2, ".-", alpha=0.6, label="train accuracy, (reward+1)/2")
    axis.set_xlabel("training step")
    axis.set_ylim(-0.02, 1.02)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def report(metrics_path: str, out_dir: str | None = None, title: str = "") -> pd.DataFrame:
    curve = learning_curve(read_metrics(metrics_path))
    out_dir = out_dir or os.path.dirname(os.path.abspath(metrics_path))
    os.makedirs(out_dir, exist_ok=True)
    curve.to_csv(os.path.join(out_dir, "curve.csv"), index=False)
    plot(curve, os.path.join(out_dir, "curve.png"), title or os.path.basename(out_dir))
    print(format_table(curve))
    print(f"curve: {os.path.join(out_dir, 'curve.csv')}, {os.path.join(out_dir, 'curve.png')}")
    return curve


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics", help="verl's file-logger JSONL (VERL_FILE_LOGGER_PATH)")
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    report(args.metrics, args.out_dir, args.title)


if __name__ == "__main__":
    main()
