"""Learning benchmark: held-out accuracy of SKPO, its ablations and baselines, per step, token and second.

    python -m skpo_verl.benchmarks.learning [--task benchmark|long] [--methods grpo,skpo,...] [--seeds 0,1,2]
                                            [--steps N] [--val-every K] [--out-dir DIR] [--quick]

Every run is `python -m verl.trainer.main_ppo` through the CPU launcher
(`examples/cpu_tiny_skpo.sh`) on a chain-sum task and its warm-started tiny model
(`skpo_verl.demo.prepare --task TASK`, built once before the first run and reused by every
run), each on its own local Ray cluster, one after another. `--task benchmark` (the default):
3 numbers from 1..9, 665 training / 64 held-out problems, a careless first step.
`--task long`: 5 numbers from 1..9, 512 training / 256 held-out problems, a solver careless at
any step that carries (docs/learning_benchmark.md, "The long task"). All methods get the same
prompts per step, G, steps, learning rate, response budget and seeds; a seed sets `data.seed`
(verl's train sampler), `+algorithm.skpo.seed` (SKPO's split draws and prioritized sampler) and
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
  skpo_first_visit_zero `+algorithm.skpo.first_visit_upstream=zero`: no upstream advantage on a prompt's
                        first visit (an intervention on the dip; docs/algorithm.md)
  skpo_upstream_rms     `+algorithm.skpo.upstream_norm=rms`: upstream advantages scaled, not centred, over the
                        batch, so each keeps the sign of its own R_I - V_prev (the same)
  skpo_offline_values   SPO's offline warm start: before the seed's run, `skpo_verl.offline_values` answers
                        every training prompt n0 = 8 times with the initial policy (verl's validation path,
                        seeded by the run's seed); the run loads them (`tracker.initial_values`); their
                        answers and tokens count in the method's samples and tokens, at step 0
  skpo_split_mid        t_q ~ U[L/3, 2L/3] instead of U[L/6, L/2]: a later split (split_low/split_high)
  skpo_split_late       t_q ~ U[L/2, 5L/6]
  skpo_two_splits       `+algorithm.skpo.num_splits=2`: multi-split (ours), a second kept segment continuing the
                        first and G more answers from both; its samples count every answer (up to 2G per prompt)

What is recorded, per run and step, from verl's file-logger metrics (`skpo_verl.demo.report`):
held-out accuracy (verl's greedy validation before training and every `--val-every` steps),
decoded tokens (GRPO, CISPO: prompts x G x `response_length/mean`; SKPO: the prompts'
candidate tokens, `skpo/upstream/rows` x `skpo/rollout/candidate_tokens_mean`, plus the
answers, `skpo/downstream/rows` x `skpo/downstream/answer_length_mean`, plus "w/o MC"'s
completions, `skpo/upstream/rows` x `skpo/rollout/completion_tokens_mean`), samples (answers:
prompts x G per step, the same for every method but `skpo_two_splits`, whose answers SKPO counts,
`skpo/downstream/rows`) and wall time (the sum of `timing_s/step`:
training only; start-up and validation, equal for all methods, are left out).

Outputs in `--out-dir`: `points.csv` (every run and step), `accuracy_vs_step.png`,
`accuracy_vs_tokens.png`, `accuracy_vs_wall.png` (mean over seeds, min-max band),
`table.md`: final accuracy (mean, its 95% t-interval over seeds, std), samples and decoded
tokens needed to reach GRPO's final accuracy as ratios to GRPO ("not reached" otherwise) and
how many seeds reach it on their own, decoded tokens per step; and `early_curve.md`, the mean
held-out accuracy of every method at the validated steps 0-15 (where SKPO dipped on the
benchmark task). Reaching is read on the mean-over-seeds curve at validated steps.

Budget (issue 13: the full run in 90 minutes on a 2-core machine). Measured on the 2-core
build machine (load average 1.4-4.6; docs/learning_benchmark.md has the figures): a run costs
about `start_up_s` before its first step (launcher, Ray, TransferQueue, workers, model load),
then `step_s_grpo` (GRPO, CISPO; median 1.14-1.22 s measured) or `step_s_skpo` (SKPO variants;
median 1.43-1.64 s) per step and `validation_s` per validation of the 64 held-out prompts (about
1 s). The defaults, 8 methods x 3 seeds x 50 steps validated every step, add up to
3 x (2 x (50 + 50 x 1.2 + 51 x 1.1) + 6 x (50 + 50 x 1.6 + 51 x 1.1)) s = 72 min; the full run
took 73 min. The long task has its own figures (`TASK_DEFAULTS`, docs/learning_benchmark.md).
`estimated_minutes` does this sum for the chosen task, methods, seeds and steps (plus one
offline estimation per seed for `skpo_offline_values`) and prints it before the first run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from skpo_verl.benchmarks.cpu_demo import LAUNCHER, _end_ray, load_average, run_launcher
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
N0 = 8  # answers per training prompt of skpo_offline_values' estimate (SPO's n0)
# The paper's method, the loss variants and ablations that ran on the benchmark task from the start.
ORIGINAL_METHODS = (
    "grpo",
    "skpo",
    "cispo",
    "skpo_wo_skip",
    "skpo_wo_mc",
    "skpo_half_candidates",
    "skpo_upstream_0.1",
    "skpo_upstream_0",
)


@dataclass(frozen=True)
class TaskDefaults:
    """A task's default seeds, steps, validation schedule and methods, and the pace measured on it
    (seconds; they make the estimate printed before a run)."""

    seeds: tuple[int, ...]
    steps: int
    val_every: int
    methods: tuple[str, ...]
    start_up_s: float
    step_s_grpo: float
    step_s_skpo: float
    validation_s: float
    offline_values_s: float  # one skpo_offline_values estimate (n0 = 8 answers per training prompt)


TASK_DEFAULTS = {
    # From the full run (docs/learning_benchmark.md), rounded up.
    "benchmark": TaskDefaults(
        seeds=SEEDS,
        steps=STEPS,
        val_every=VAL_EVERY,
        methods=ORIGINAL_METHODS,
        start_up_s=50.0,
        step_s_grpo=1.2,
        step_s_skpo=1.6,
        validation_s=1.1,
        offline_values_s=120.0,
    ),
    # Sizing runs on the long task (docs/learning_benchmark.md, "The long task").
    "long": TaskDefaults(
        seeds=(0, 1, 2, 3, 4),
        steps=STEPS,
        val_every=5,
        methods=(
            *ORIGINAL_METHODS,
            "skpo_first_visit_zero",
            "skpo_upstream_rms",
            "skpo_offline_values",
            "skpo_split_late",
        ),
        start_up_s=50.0,
        step_s_grpo=2.0,
        step_s_skpo=2.6,
        validation_s=3.0,
        offline_values_s=150.0,
    ),
}


@dataclass(frozen=True)
class Method:
    algo: str  # the launcher's ALGO
    overrides: tuple[str, ...] = ()
    offline_values: bool = False  # estimate initial values first and load them (SPO's offline warm start)
    split: tuple[float, float] | None = None  # (split_low, split_high) other than the paper's (1/6, 1/2)
    splits: int = 1  # algorithm.skpo.num_splits (multi-split, ours)


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
    # Interventions on the dip (docs/algorithm.md, "Interventions on the dip").
    "skpo_first_visit_zero": Method("skpo", ("+algorithm.skpo.first_visit_upstream=zero",)),
    "skpo_upstream_rms": Method("skpo", ("+algorithm.skpo.upstream_norm=rms",)),
    "skpo_offline_values": Method("skpo", offline_values=True),
    # Later splits than the paper's t_q ~ U[L/6, L/2].
    "skpo_split_mid": Method("skpo", split=(1 / 3, 2 / 3)),
    "skpo_split_late": Method("skpo", split=(1 / 2, 5 / 6)),
    # Multi-split (ours, docs/algorithm.md): two kept segments per prompt, G answers after each.
    "skpo_two_splits": Method("skpo", splits=2),
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


def method_overrides(method: str, settings: Settings) -> list[str]:
    """The method's own overrides; a later split also raises the rollout's prompt budget to hold its longest
    segment before the problem (the launcher sizes it for the paper's split_high = 1/2)."""
    spec = METHODS[method]
    overrides = list(spec.overrides)
    if spec.split is not None:
        from skpo_verl.demo.prepare import task_lengths

        low, high = spec.split
        prompt_length, response_length = task_lengths(settings.task)
        # The launcher starts L_q at the response budget, the longest L_q can be (docs/config.md, Lengths).
        longest_segment = math.ceil(high * response_length)
        overrides += [
            f"+algorithm.skpo.split_low={low!r}",
            f"+algorithm.skpo.split_high={high!r}",
            f"actor_rollout_ref.rollout.prompt_length={prompt_length + longest_segment}",
        ]
    if spec.splits > 1:
        from skpo_verl.demo.prepare import task_lengths

        prompt_length, response_length = task_lengths(settings.task)
        # The last stage's answers read every kept segment, together under the response budget (the stage
        # rule keeps them below it), as the launcher's NUM_SPLITS does.
        overrides += [
            f"+algorithm.skpo.num_splits={spec.splits}",
            f"actor_rollout_ref.rollout.prompt_length={prompt_length + response_length}",
        ]
    return overrides


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


# ---- per-step arithmetic (pure) ------------------------------------------------------------


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
            f"| {f'{row.samples_ratio:.2f}' if reached else 'not reached'} "
            f"| {f'{row.tokens_ratio:.2f}' if reached else 'not reached'} "
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


def estimated_minutes(methods: list[str], seeds: int, settings: Settings) -> float:
    pace = TASK_DEFAULTS[settings.task]
    per_step = [pace.step_s_grpo if METHODS[m].algo == "grpo" else pace.step_s_skpo for m in methods]
    validations = settings.steps // settings.val_every + 1
    runs = sum(pace.start_up_s + settings.steps * s + validations * pace.validation_s for s in per_step)
    estimates = pace.offline_values_s * sum(METHODS[m].offline_values for m in methods)
    return seeds * (runs + estimates) / 60


# ---- runs ------------------------------------------------------------------------------------


def _launcher_variables(settings: Settings, algo: str, workdir: str) -> dict[str, str]:
    launcher_variables = {name: str(getattr(settings, field)) for name, field in LAUNCHER_VARIABLES.items()}
    return {**launcher_variables, "ALGO": algo, "WORKDIR": workdir}


def offline_values(seed: int, settings: Settings, workdir: str, out_dir: Path, n0: int) -> dict:
    """SPO's offline estimate for one seed (`skpo_verl.offline_values` through the launcher, its rollout seeded
    by `seed`); returns {"path", "answers", "tokens"}. Reuses a finished estimate with the same settings."""
    from skpo_verl.training.initial_values import read_initial_values
    from skpo_verl.training.offline_values import estimate

    folder = out_dir / "offline_values" / f"{settings.task}_seed{seed}"
    path, record = folder / "values.json", folder / "settings.json"
    wanted = {"task": settings.task, "seed": seed, "n0": n0}
    if not (record.exists() and json.loads(record.read_text()) == wanted and path.exists()):
        if folder.exists():
            shutil.rmtree(folder)
        (folder / "dump").mkdir(parents=True)
        ray_dir = tempfile.mkdtemp(prefix="skpo-ray-", dir="/tmp")
        env = {**os.environ, **_launcher_variables(settings, "skpo", workdir), "RUN_DIR": str(folder)}
        command = [
            "bash",
            str(LAUNCHER),
            *seed_overrides(seed),
            f"trainer.experiment_name=offline_values_seed{seed}",
            "+ray_kwargs.ray_init.address=local",
            f"+ray_kwargs.ray_init._temp_dir={ray_dir}",
        ]
        started = time.monotonic()
        try:
            with open(folder / "output.log", "w") as log:
                estimate(command, str(path), n0, str(folder / "dump"), env=env, output=log)
        except (subprocess.CalledProcessError, RuntimeError, ValueError) as error:
            raise RuntimeError(
                f"the offline estimate for seed {seed} failed ({error}); see {folder / 'output.log'}"
            ) from error
        finally:
            _end_ray(ray_dir)
            shutil.rmtree(ray_dir, ignore_errors=True)
        print(f"  offline values seed {seed}: {time.monotonic() - started:.0f} s ({load_average()})", flush=True)
        record.write_text(json.dumps(wanted))
    initial = read_initial_values(str(path))
    return {"path": str(path), "answers": n0 * len(initial.values), "tokens": initial.decoded_tokens}


def train(
    method: str, seed: int, settings: Settings, workdir: str, run_dir: Path, values: dict | None = None
) -> dict[int, dict]:
    """One launcher run; returns verl's metrics by step. Reuses a finished run with the same settings."""
    record = run_dir / "settings.json"
    overrides = method_overrides(method, settings)
    if values is not None:
        overrides.append(f"+algorithm.skpo.tracker.initial_values={values['path']}")
    wanted = {"method": method, "seed": seed, "overrides": overrides, **asdict(settings)}
    if record.exists() and json.loads(record.read_text()) == wanted:
        print(f"  {method} seed {seed}: reusing {run_dir}", flush=True)
        return read_metrics(str(run_dir / "metrics.jsonl"))
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    variables = _launcher_variables(settings, METHODS[method].algo, workdir)
    overrides = [
        *overrides,
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
    methods: list[str], seeds: list[int], settings: Settings, out_dir: Path, workdir: str, n0: int = N0
) -> pd.DataFrame:
    from skpo_verl.demo.prepare import prepare

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown} in --methods; choose from {', '.join(METHODS)}")
    if settings.task not in TASK_DEFAULTS:
        raise ValueError(f"unknown task {settings.task!r}; choose from {', '.join(TASK_DEFAULTS)}")
    if settings.val_every < 1 or settings.steps % settings.val_every:
        raise ValueError(
            f"--steps {settings.steps} must be a multiple of --val-every {settings.val_every} (final accuracy)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    prepare(workdir, settings.task)  # the warm start, once, outside every run's time
    print(
        f"task {settings.task}: {len(methods)} methods x {len(seeds)} seeds x {settings.steps} steps: about "
        f"{estimated_minutes(methods, len(seeds), settings):.0f} min at the pace measured on the 2-core build "
        f"machine ({load_average()})",
        flush=True,
    )
    frames = []
    for seed in seeds:  # seed-major: an interrupted run still has every method at the first seeds
        for method in methods:
            values = offline_values(seed, settings, workdir, out_dir, n0) if METHODS[method].offline_values else None
            by_step = train(method, seed, settings, workdir, out_dir / "runs" / f"{method}_seed{seed}", values)
            upfront = {"upfront_samples": values["answers"], "upfront_tokens": values["tokens"]} if values else {}
            frames.append(run_points(by_step, settings, **upfront).assign(method=method, seed=seed))
    points = pd.concat(frames, ignore_index=True)
    points = points[["method", "seed", *[c for c in points.columns if c not in ("method", "seed")]]]
    points.to_csv(out_dir / "points.csv", index=False)
    plot_curves(points, out_dir, settings.task)
    (out_dir / "early_curve.md").write_text(early_curve_markdown(points) + "\n")
    if BASELINE in methods:
        markdown = format_markdown(summary_table(points))
        (out_dir / "table.md").write_text(markdown + "\n")
        print(markdown)
    else:
        print(f"no table.md: its ratios are to {BASELINE}, which is not among --methods")
    print(f"outputs: {out_dir}/points.csv, table.md, early_curve.md, accuracy_vs_{{step,tokens,wall}}.png")
    return points


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default=TASK, choices=list(TASK_DEFAULTS), help="the chain-sum task (see above)")
    parser.add_argument(
        "--methods", default=None, help=f"comma-separated, from {', '.join(METHODS)} (default: the task's list)"
    )
    parser.add_argument("--seeds", default=None, help="comma-separated integers (default: the task's)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the task's, 50)")
    parser.add_argument("--val-every", type=int, default=None, help="validate every K steps (default: the task's)")
    parser.add_argument("--out-dir", default="skpo_learning_benchmark")
    parser.add_argument("--workdir", default=os.path.expanduser(os.path.join("~", ".cache", "skpo_verl", "cpu_tiny")))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 steps, 1 seed, 4 held-out prompts (offline estimates with n0 = 1): tests the harness only",
    )
    args = parser.parse_args(argv)
    defaults = TASK_DEFAULTS[args.task]
    methods = [m for m in args.methods.split(",") if m] if args.methods else list(defaults.methods)
    seeds = [int(s) for s in args.seeds.split(",") if s] if args.seeds else list(defaults.seeds)
    n0 = N0
    if args.quick:
        settings, seeds, n0 = Settings(steps=2, val_every=1, val_max_samples=4, task=args.task), seeds[:1], 1
    else:
        settings = Settings(
            steps=args.steps or defaults.steps, val_every=args.val_every or defaults.val_every, task=args.task
        )
    run_benchmark(methods, seeds, settings, Path(args.out_dir), args.workdir, n0)


if __name__ == "__main__":
    main()
