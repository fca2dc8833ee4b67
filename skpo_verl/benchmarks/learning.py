"""Learning benchmark: held-out accuracy of SKPO, its ablations and baselines, per step, token and second.

    python -m skpo_verl.benchmarks.learning [--methods grpo,skpo,...] [--seeds 0,1,2] [--steps N]
                                            [--out-dir DIR] [--quick]

Every run is `python -m verl.trainer.main_ppo` through the CPU launcher
(`examples/cpu_tiny_skpo.sh`) on the chain-sum task's `benchmark` size (3 numbers from 1..9,
665 training / 64 held-out problems) and its warm-started tiny model (`skpo_verl.demo.prepare
--task benchmark`, built once before the first run and reused by every run), each on its own
local Ray cluster, one after another. All methods get the same prompts per step, G,
steps, learning rate, response budget and seeds; a seed sets `data.seed` (verl's train
sampler), `+algorithm.skpo.seed` (SKPO's split draws and prioritized sampler) and
`actor_rollout_ref.rollout.seed` (the `hf_cpu` sampling generator).

Methods (`METHODS`):
  grpo                  verl's GRPO, stock `single_turn_agent`
  skpo                  SKPO, the paper's defaults
  cispo                 verl's `loss_mode=cispo` on whole responses with GRPO advantages and SKPO's
                        downstream clip [0.8, 1.28]: SKPO's downstream loss without the skip connection
  skpo_wo_skip          `+algorithm.skpo.conditioning=continual` (the paper's "w/o skip")
  skpo_wo_mc            `+algorithm.skpo.upstream_reward=own_completion` (the paper's "w/o MC")
  skpo_half_candidates  `+algorithm.skpo.num_candidates=G/2` (fewer candidates than answers)
  skpo_upstream_0.1     loss weights w_up 0.1, w_down 0.9 instead of the paper's 0.5, 0.5
  skpo_upstream_0       loss weights 0, 1: no upstream term, the answers from [s, q] alone

What is recorded, per run and step, from verl's file-logger metrics (`skpo_verl.demo.report`):
held-out accuracy (verl's greedy validation before training and every `--val-every` steps),
decoded tokens (GRPO, CISPO: prompts x G x `response_length/mean`; SKPO: the prompts'
candidate tokens, `skpo/upstream/rows` x `skpo/rollout/candidate_tokens_mean`, plus the
answers, `skpo/downstream/rows` x `skpo/downstream/answer_length_mean`, plus "w/o MC"'s
completions, `skpo/upstream/rows` x `skpo/rollout/completion_tokens_mean`), samples (answers:
prompts x G per step, the same for every method) and wall time (the sum of `timing_s/step`:
training only; start-up and validation, equal for all methods, are left out).

Outputs in `--out-dir`: `points.csv` (every run and step), `accuracy_vs_step.png`,
`accuracy_vs_tokens.png`, `accuracy_vs_wall.png` (mean over seeds, min-max band) and
`table.md`: final accuracy (mean +- std over seeds), samples and decoded tokens needed to
reach GRPO's final accuracy as ratios to GRPO ("not reached" otherwise), decoded tokens per
step. Reaching is read on the mean-over-seeds curve at validated steps.

Budget (issue 13: the full run in 90 minutes on a 2-core machine). Measured on the 2-core
build machine (load average 1.4-4.6; docs/learning_benchmark.md has the figures): a run costs
about START_UP_S before its first step (launcher, Ray, TransferQueue, workers, model load),
then STEP_S_GRPO (GRPO, CISPO; median 1.14-1.22 s measured) or STEP_S_SKPO (SKPO variants; median
1.43-1.64 s) per step and VALIDATION_S per validation of the 64 held-out prompts (about 1 s).
The defaults, 8 methods x 3 seeds x 50 steps validated every step, add up to
3 x (2 x (50 + 50 x 1.2 + 51 x 1.1) + 6 x (50 + 50 x 1.6 + 51 x 1.1)) s = 72 min; the full run
took 73 min. `estimated_minutes` does this sum for the chosen methods, seeds and steps and
prints it before the first run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from skpo_verl.benchmarks.cpu_demo import load_average, run_launcher
from skpo_verl.demo.report import decoded_tokens, heldout_key, read_metrics

PROMPTS_PER_STEP = 8
GROUP_SIZE = 8
# From one-seed probes of GRPO and SKPO on this task before the full run: at 5e-4
# both were unstable (GRPO 89% at step 5 -> 70% at step 30; SKPO 44-70%, 44% at step 30); at 2e-4 both
# rose and stayed (GRPO 98%, SKPO 94% at step 40). docs/learning_benchmark.md, "Sizing".
LR = 2e-4
STEPS = 50
SEEDS = (0, 1, 2)
VAL_EVERY = 1
BASELINE = "grpo"
TASK = "benchmark"  # the larger chain-sum task (skpo_verl.demo.prepare.TASKS)
# From the full run (docs/learning_benchmark.md), rounded up; they size the defaults and the
# estimate printed before a run.
START_UP_S = 50.0
STEP_S_GRPO = 1.2
STEP_S_SKPO = 1.6
VALIDATION_S = 1.1


@dataclass(frozen=True)
class Method:
    algo: str  # the launcher's ALGO
    overrides: tuple[str, ...] = ()


METHODS = {
    "grpo": Method("grpo"),
    "skpo": Method("skpo"),
    "cispo": Method(
        "grpo",
        (
            "actor_rollout_ref.actor.policy_loss.loss_mode=cispo",
            "actor_rollout_ref.actor.clip_ratio_low=0.2",
            "actor_rollout_ref.actor.clip_ratio_high=0.28",
        ),
    ),
    "skpo_wo_skip": Method("skpo", ("+algorithm.skpo.conditioning=continual",)),
    "skpo_wo_mc": Method("skpo", ("+algorithm.skpo.upstream_reward=own_completion",)),
    "skpo_half_candidates": Method("skpo", (f"+algorithm.skpo.num_candidates={GROUP_SIZE // 2}",)),
    # The balance of the two loss terms (docs/algorithm.md, "When SKPO learns slower than GRPO"):
    # less weight on the upstream term, and none (the downstream answers from [s, q] alone).
    "skpo_upstream_0.1": Method(
        "skpo", ("+algorithm.skpo.loss.upstream_weight=0.1", "+algorithm.skpo.loss.downstream_weight=0.9")
    ),
    "skpo_upstream_0": Method(
        "skpo", ("+algorithm.skpo.loss.upstream_weight=0.0", "+algorithm.skpo.loss.downstream_weight=1.0")
    ),
}


@dataclass(frozen=True)
class Settings:
    steps: int
    val_every: int
    prompts_per_step: int = PROMPTS_PER_STEP
    group_size: int = GROUP_SIZE
    lr: float = LR
    val_max_samples: int = -1  # verl's data.val_max_samples; -1 = the whole held-out set
    task: str = TASK  # skpo_verl.demo.prepare.TASKS


# The launcher's variables (examples/cpu_tiny_skpo.sh) that carry the settings.
LAUNCHER_VARIABLES = {
    "STEPS": "steps",
    "VAL_EVERY": "val_every",
    "PROMPTS_PER_STEP": "prompts_per_step",
    "GROUP_SIZE": "group_size",
    "LR": "lr",
    "TASK": "task",
}


def seed_overrides(seed: int) -> list[str]:
    return [f"data.seed={seed}", f"+algorithm.skpo.seed={seed}", f"actor_rollout_ref.rollout.seed={seed}"]


# ---- per-step arithmetic (pure) ------------------------------------------------------------


def run_points(by_step: dict[int, dict], settings: Settings) -> pd.DataFrame:
    """One row per step 0..steps: held-out accuracy (NaN where not validated) and cumulative costs."""
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
                "decoded_tokens": decoded_tokens(metrics, rows_per_step) if trained else 0.0,
                "samples": rows_per_step if trained else 0,
                "step_time_s": metrics["timing_s/step"] if trained else 0.0,
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


def summary_table(points: pd.DataFrame, baseline: str = BASELINE) -> pd.DataFrame:
    """Per method: final accuracy mean/std over seeds, cost to reach the baseline's final accuracy, tokens per step."""
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
        rows.append(
            {
                "method": method,
                "final_accuracy_mean": final.mean()[method],
                "final_accuracy_std": final.std(ddof=1)[method] if final.count()[method] > 1 else 0.0,
                "seeds": int(final.count()[method]),
                "reach_step": reach["step"] if reach else None,
                "samples_ratio": reach["samples"] / base["samples"] if reach else None,
                "tokens_ratio": reach["tokens"] / base["tokens"] if reach else None,
                "tokens_per_step": trained.loc[trained["method"] == method, "decoded_tokens"].mean(),
                "step_time_s": trained.loc[trained["method"] == method, "step_time_s"].median(),
            }
        )
    table = pd.DataFrame(rows)
    table.attrs["target"] = target
    return table


def format_markdown(table: pd.DataFrame, baseline: str = BASELINE) -> str:
    target = table.attrs["target"]
    lines = [
        f"Target: {baseline}'s final held-out accuracy, {target:.1%} (mean over seeds).",
        "",
        (
            "| method | final held-out accuracy (mean ± std) | seeds | step reached | samples to reach (x GRPO) "
            "| decoded tokens to reach (x GRPO) | decoded tokens / step | median step time |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        reached = row.reach_step is not None and not pd.isna(row.reach_step)
        lines.append(
            f"| {row.method} | {row.final_accuracy_mean:.1%} ± {row.final_accuracy_std:.1%} | {row.seeds} "
            f"| {int(row.reach_step) if reached else 'not reached'} "
            f"| {f'{row.samples_ratio:.2f}' if reached else 'not reached'} "
            f"| {f'{row.tokens_ratio:.2f}' if reached else 'not reached'} "
            f"| {row.tokens_per_step:.0f} | {row.step_time_s:.1f} s |"
        )
    return "\n".join(lines)


def plot_curves(points: pd.DataFrame, out_dir: Path) -> list[Path]:
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
        axis.set_title("chain-sum task, tiny model, CPU: mean and min-max over seeds")
        figure.tight_layout()
        paths.append(out_dir / name)
        figure.savefig(paths[-1], dpi=120)
        plt.close(figure)
    return paths


def estimated_minutes(methods: list[str], seeds: int, settings: Settings) -> float:
    per_step = [STEP_S_GRPO if METHODS[m].algo == "grpo" else STEP_S_SKPO for m in methods]
    validations = settings.steps // settings.val_every + 1
    return seeds * sum(START_UP_S + settings.steps * s + validations * VALIDATION_S for s in per_step) / 60


# ---- runs ------------------------------------------------------------------------------------


def train(method: str, seed: int, settings: Settings, workdir: str, run_dir: Path) -> dict[int, dict]:
    """One launcher run; returns verl's metrics by step. Reuses a finished run with the same settings."""
    record = run_dir / "settings.json"
    wanted = {"method": method, "seed": seed, "overrides": list(METHODS[method].overrides), **asdict(settings)}
    if record.exists() and json.loads(record.read_text()) == wanted:
        print(f"  {method} seed {seed}: reusing {run_dir}", flush=True)
        return read_metrics(str(run_dir / "metrics.jsonl"))
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    launcher_variables = {name: str(getattr(settings, field)) for name, field in LAUNCHER_VARIABLES.items()}
    variables = {**launcher_variables, "ALGO": METHODS[method].algo, "WORKDIR": workdir}
    overrides = [
        *METHODS[method].overrides,
        *seed_overrides(seed),
        f"data.val_max_samples={settings.val_max_samples}",
        f"trainer.experiment_name={method}_seed{seed}",
    ]
    started = time.monotonic()
    returncode = run_launcher(run_dir, variables, overrides)
    if returncode != 0:
        raise RuntimeError(f"{method} seed {seed} failed (exit {returncode}); see {run_dir / 'output.log'}")
    print(f"  {method} seed {seed}: {time.monotonic() - started:.0f} s ({load_average()})", flush=True)
    record.write_text(json.dumps(wanted))
    return read_metrics(str(run_dir / "metrics.jsonl"))


def run_benchmark(
    methods: list[str], seeds: list[int], settings: Settings, out_dir: Path, workdir: str
) -> pd.DataFrame:
    from skpo_verl.demo.prepare import prepare

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown} in --methods; choose from {', '.join(METHODS)}")
    if settings.val_every < 1 or settings.steps % settings.val_every:
        raise ValueError(
            f"--steps {settings.steps} must be a multiple of --val-every {settings.val_every} (final accuracy)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    prepare(workdir, settings.task)  # the warm start, once, outside every run's time
    print(
        f"{len(methods)} methods x {len(seeds)} seeds x {settings.steps} steps: about "
        f"{estimated_minutes(methods, len(seeds), settings):.0f} min at the pace measured on the 2-core build "
        f"machine ({load_average()})",
        flush=True,
    )
    frames = []
    for seed in seeds:  # seed-major: an interrupted run still has every method at the first seeds
        for method in methods:
            by_step = train(method, seed, settings, workdir, out_dir / "runs" / f"{method}_seed{seed}")
            frames.append(run_points(by_step, settings).assign(method=method, seed=seed))
    points = pd.concat(frames, ignore_index=True)
    points = points[["method", "seed", *[c for c in points.columns if c not in ("method", "seed")]]]
    points.to_csv(out_dir / "points.csv", index=False)
    plot_curves(points, out_dir)
    if BASELINE in methods:
        markdown = format_markdown(summary_table(points))
        (out_dir / "table.md").write_text(markdown + "\n")
        print(markdown)
    else:
        print(f"no table.md: its ratios are to {BASELINE}, which is not among --methods")
    print(f"outputs: {out_dir}/points.csv, table.md, accuracy_vs_{{step,tokens,wall}}.png")
    return points


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated integers")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--val-every", type=int, default=VAL_EVERY)
    parser.add_argument("--out-dir", default="skpo_learning_benchmark")
    parser.add_argument("--workdir", default=os.path.expanduser(os.path.join("~", ".cache", "skpo_verl", "cpu_tiny")))
    parser.add_argument(
        "--quick", action="store_true", help="2 steps, 1 seed, 4 held-out prompts: tests the harness only"
    )
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if args.quick:
        settings, seeds = Settings(steps=2, val_every=1, val_max_samples=4), seeds[:1]
    else:
        settings = Settings(steps=args.steps, val_every=args.val_every)
    run_benchmark(methods, seeds, settings, Path(args.out_dir), args.workdir)


if __name__ == "__main__":
    main()
