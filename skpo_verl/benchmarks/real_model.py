"""SKPO vs GRPO on a real pretrained model on CPU: SmolLM2-135M-Instruct on the local word problems.

    python -m skpo_verl.benchmarks.real_model [--methods grpo,skpo] [--seeds 0,1] [--steps N]
                                              [--val-every K] [--out-dir DIR] [--workdir DIR] [--quick]

Every run is `python -m verl.trainer.main_ppo` through `examples/cpu_smollm2_skpo.sh` (ALGO=skpo
or grpo; full fine-tune, FSDP2 on gloo, the `hf_cpu` rollout unless ROLLOUT says otherwise),
each on its own local Ray cluster, one after another, seed-major. Before the first run the
checkpoint is built once (`skpo-prepare-model smollm2-135m-instruct`) and the word problems
written (`python -m skpo_verl.demo.word_problems`); every run reuses both. All methods get the
same prompts per step, G, steps, learning rate, response budget and seeds; a seed sets
`data.seed`, `+algorithm.skpo.seed` and `actor_rollout_ref.rollout.seed`.

Recorded per run (from verl's file-logger metrics, `skpo_verl.demo.report`): held-out accuracy
(verl's greedy validation of the whole held-out set, before training and every `--val-every`
steps), decoded tokens per step (GRPO: prompts x G x mean answer length; SKPO: every prompt's
candidates plus its answers), wall time (the sum of `timing_s/step`; start-up and validation
left out) and the run's peak memory (PSS of the launcher's processes and its Ray cluster,
sampled every second). The last step saves the actor as a Hugging Face checkpoint
(`checkpoint.save_contents=[model,hf_model]`); `skpo-evaluate` then scores the base model and
each trained checkpoint on the held-out parquet (greedy, one answer per problem, `--backend hf`),
the same problems verl validates on, as an independent check of the last validation.

Outputs in `--out-dir`: `points.csv` (every run and step), `runs.csv` (per run: accuracy at each
validation, decoded tokens, wall time, peak memory, skpo-evaluate's accuracy),
`accuracy_vs_step.png`, `accuracy_vs_tokens.png`, `accuracy_vs_wall.png` (mean over seeds,
min-max band), `table.md`, and `eval/` (skpo-evaluate's generations and results).

Budget. Sized on the 2-core build machine (docs/real_model.md, Sizing): START_UP_S before the
first step (Ray, workers, loading the 538 MB checkpoint twice), STEP_S_GRPO / STEP_S_SKPO per
step, VALIDATION_S per validation of the 64 held-out problems, EVALUATE_S per skpo-evaluate
pass. `estimated_minutes` adds them up and prints the sum before the first run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import psutil

from skpo_verl.benchmarks import learning_report
from skpo_verl.benchmarks.cpu_demo import REPO, load_average, run_launcher, tree_pss
from skpo_verl.benchmarks.learning_methods import RUN_VARIABLES, seed_overrides
from skpo_verl.benchmarks.learning_report import run_points
from skpo_verl.demo.report import read_metrics

LAUNCHER = REPO / "examples" / "cpu_smollm2_skpo.sh"
SKPO_EVALUATE = (sys.executable, "-m", "skpo_verl.evaluation.cli")  # the console script, with this interpreter
MODEL = "smollm2-135m-instruct"
METHODS = ("grpo", "skpo")
SEEDS = (0, 1)
# The launcher's defaults (examples/cpu_smollm2_skpo.sh), passed explicitly so a run records them.
STEPS = 4
VAL_EVERY = 2
PROMPTS_PER_STEP = 4
GROUP_SIZE = 4
LR = 1e-6
RESPONSE_LENGTH = 192
VAL_SIZE = 64
# Measured on the shared 2-core build machine at load average 13-15 (docs/real_model.md, Sizing),
# rounded up: launch to first step; one step of 4 prompts x G = 4; one greedy validation of the
# 64 held-out problems by the hf_cpu server (estimated from 8 problems: 25 s); one skpo-evaluate
# pass over the 64 (hf backend, batches of 16: 10 min 38 s).
START_UP_S = 400.0
STEP_S_GRPO = 250.0
STEP_S_SKPO = 330.0
VALIDATION_S = 180.0
EVALUATE_S = 660.0


@dataclass(frozen=True)
class Settings:
    steps: int = STEPS
    val_every: int = VAL_EVERY
    prompts_per_step: int = PROMPTS_PER_STEP
    group_size: int = GROUP_SIZE
    lr: float = LR
    response_length: int = RESPONSE_LENGTH
    val_size: int = VAL_SIZE


# The launcher's variables that carry the settings: the CPU launchers' common ones, the answer budget and the
# held-out set's size.
LAUNCHER_VARIABLES = {**RUN_VARIABLES, "RESPONSE_LENGTH": "response_length", "VAL_SIZE": "val_size"}


def estimated_minutes(methods: list[str], seeds: int, settings: Settings, evaluate: bool) -> float:
    validations = settings.steps // settings.val_every + 1
    per_run = [
        START_UP_S + settings.steps * (STEP_S_SKPO if m == "skpo" else STEP_S_GRPO) + validations * VALIDATION_S
        for m in methods
    ]
    evaluations = (1 + len(methods) * seeds) if evaluate else 0
    return (seeds * sum(per_run) + evaluations * EVALUATE_S) / 60


def prepare(workdir: Path, settings: Settings) -> dict[str, str]:
    """The checkpoint and the word problems, built once (both commands reuse what is already there)."""
    paths = {}
    for command in (
        [sys.executable, "-m", "skpo_verl.models.prepare", MODEL, "--output-dir", str(workdir / "model")],
        [
            sys.executable,
            "-m",
            "skpo_verl.demo.word_problems",
            "--output-dir",
            str(workdir / "word_problems"),
            "--val-size",
            str(settings.val_size),
        ],
    ):
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        paths.update(line.split("=", 1) for line in output.strip().splitlines() if "=" in line)
    return paths


def train(method: str, seed: int, settings: Settings, workdir: Path, run_dir: Path) -> dict:
    """One launcher run; returns its metrics by step and its peak memory.

    Reuses a finished run with the same settings."""
    record = run_dir / "settings.json"
    wanted = {"method": method, "seed": seed, **asdict(settings)}
    if record.exists() and json.loads(record.read_text())["settings"] == wanted:
        print(f"  {method} seed {seed}: reusing {run_dir}", flush=True)
        return {**json.loads(record.read_text()), "metrics": read_metrics(str(run_dir / "metrics.jsonl"))}
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    variables = {name: str(getattr(settings, field)) for name, field in LAUNCHER_VARIABLES.items()}
    variables.update({"ALGO": method, "WORKDIR": str(workdir), "MODEL_PATH": str(workdir / "model")})
    overrides = [
        *seed_overrides(seed),
        f"trainer.experiment_name={method}_seed{seed}",
        # The last step saves the actor, also as a Hugging Face checkpoint for skpo-evaluate.
        f"trainer.save_freq={settings.steps}",
        f"trainer.default_local_dir={run_dir / 'checkpoints'}",
        "actor_rollout_ref.actor.checkpoint.save_contents=[model,hf_model]",
    ]
    peak = [0]

    def measure(process, ray_dir):
        peak[0] = max(peak[0], tree_pss(psutil.Process(process.pid), ray_dir))

    started = time.monotonic()
    returncode = run_launcher(run_dir, variables, overrides, poll=measure, launcher=LAUNCHER)
    if returncode != 0:
        raise RuntimeError(f"{method} seed {seed} failed (exit {returncode}); see {run_dir / 'output.log'}")
    result = {"settings": wanted, "run_wall_s": time.monotonic() - started, "peak_gb": peak[0] / 1e9}
    print(f"  {method} seed {seed}: {result['run_wall_s']:.0f} s, peak {result['peak_gb']:.1f} GB ({load_average()})")
    record.write_text(json.dumps(result))
    return {**result, "metrics": read_metrics(str(run_dir / "metrics.jsonl"))}


def trained_checkpoint(run_dir: Path, steps: int) -> Path:
    path = run_dir / "checkpoints" / f"global_step_{steps}" / "actor" / "huggingface"
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} has no Hugging Face checkpoint (the run's last save)")
    return path


def evaluate(model: Path, val_file: str, eval_dir: Path, method: str, settings: Settings) -> float:
    """skpo-evaluate's greedy accuracy (%) of `model` on the held-out parquet; reuses finished generations."""
    generations = eval_dir / f"{method}.jsonl"
    common = ["--generations", str(generations)]
    subprocess.run(
        [
            *SKPO_EVALUATE,
            "generate",
            "--backend",
            "hf",
            "--device",
            "cpu",
            "--model",
            str(model),
            "--data-file",
            val_file,
            "--temperature",
            "0",
            "--max-tokens",
            str(settings.response_length),
            *common,
        ],
        check=True,
    )
    results = eval_dir / "results.json"
    score = ["score", "--base-model", "SmolLM2-135M-Instruct", "--method", method, "--results", str(results)]
    subprocess.run([*SKPO_EVALUATE, *score, "--samples", "1", *common], check=True, capture_output=True)
    scores = json.loads(results.read_text())["entries"]
    return next(e["scores"] for e in scores if e["method"] == method)["skpo_word_problems"]


def run_summary(method: str, seed: int, points: pd.DataFrame, run: dict, evaluated: float | None) -> dict:
    validated = points.dropna(subset=["heldout_accuracy"])
    return {
        "method": method,
        "seed": seed,
        "accuracy_by_step": " ".join(
            f"{int(s)}:{a:.1%}" for s, a in zip(validated["step"], validated["heldout_accuracy"])
        ),
        "first_accuracy": validated["heldout_accuracy"].iloc[0],
        "last_accuracy": validated["heldout_accuracy"].iloc[-1],
        "decoded_tokens": points["decoded_tokens"].sum(),
        "train_wall_s": points["step_time_s"].sum(),
        "run_wall_s": run["run_wall_s"],
        "peak_gb": run["peak_gb"],
        "skpo_evaluate_accuracy": evaluated / 100 if evaluated is not None else math.nan,
    }


def format_markdown(runs: pd.DataFrame, base_accuracy: float | None) -> str:
    lines = []
    if base_accuracy is not None:
        lines += [f"Base model (skpo-evaluate, greedy, held-out set): {base_accuracy:.1f}%.", ""]
    lines += [
        "| method | seed | held-out accuracy (step: greedy acc) | decoded tokens | training wall | run wall "
        "| peak memory | skpo-evaluate after training |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in runs.itertuples():
        evaluated = "–" if pd.isna(row.skpo_evaluate_accuracy) else f"{row.skpo_evaluate_accuracy:.1%}"
        lines.append(
            f"| {row.method} | {row.seed} | {row.accuracy_by_step} | {row.decoded_tokens:,.0f} "
            f"| {row.train_wall_s:.0f} s "
            f"| {row.run_wall_s:.0f} s | {row.peak_gb:.1f} GB | {evaluated} |"
        )
    return "\n".join(lines)


def plot_curves(points: pd.DataFrame, out_dir: Path) -> list[Path]:
    return learning_report.plot_curves(
        points, out_dir, title="SmolLM2-135M-Instruct, word problems, CPU: mean and min-max over seeds"
    )


def run_benchmark(
    methods: list[str], seeds: list[int], settings: Settings, out_dir: Path, workdir: Path, do_evaluate: bool = True
) -> pd.DataFrame:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown} in --methods; choose from {', '.join(METHODS)}")
    if settings.val_every < 1 or settings.steps % settings.val_every:
        raise ValueError(f"--steps {settings.steps} must be a multiple of --val-every {settings.val_every}")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = prepare(workdir, settings)
    print(
        f"{len(methods)} methods x {len(seeds)} seeds x {settings.steps} steps: about "
        f"{estimated_minutes(methods, len(seeds), settings, do_evaluate):.0f} min at the pace measured on the 2-core "
        f"build machine ({load_average()})",
        flush=True,
    )
    eval_dir = out_dir / "eval"
    base_accuracy = None
    if do_evaluate:
        eval_dir.mkdir(exist_ok=True)
        base_accuracy = evaluate(Path(paths["MODEL_PATH"]), paths["VAL_FILE"], eval_dir, "base", settings)
        print(f"  base model: {base_accuracy:.1f}% on the held-out set (skpo-evaluate)", flush=True)
    frames, summaries = [], []
    for seed in seeds:
        for method in methods:
            run_dir = out_dir / "runs" / f"{method}_seed{seed}"
            run = train(method, seed, settings, workdir, run_dir)
            # run_points' settings need only the per-step sizes and the number of steps.
            points = run_points(run["metrics"], _points_settings(settings)).assign(method=method, seed=seed)
            frames.append(points)
            evaluated = None
            if do_evaluate:
                model = trained_checkpoint(run_dir, settings.steps)
                evaluated = evaluate(model, paths["VAL_FILE"], eval_dir, f"{method}_seed{seed}", settings)
            summaries.append(run_summary(method, seed, points, run, evaluated))
    points = pd.concat(frames, ignore_index=True)
    points = points[["method", "seed", *[c for c in points.columns if c not in ("method", "seed")]]]
    points.to_csv(out_dir / "points.csv", index=False)
    runs = pd.DataFrame(summaries)
    runs.to_csv(out_dir / "runs.csv", index=False)
    plot_curves(points, out_dir)
    markdown = format_markdown(runs, base_accuracy)
    (out_dir / "table.md").write_text(markdown + "\n")
    print(markdown)
    print(f"outputs: {out_dir}/points.csv, runs.csv, table.md, accuracy_vs_{{step,tokens,wall}}.png")
    return runs


def _points_settings(settings: Settings):
    from skpo_verl.benchmarks.learning_methods import Settings as LearningSettings

    return LearningSettings(
        steps=settings.steps,
        val_every=settings.val_every,
        prompts_per_step=settings.prompts_per_step,
        group_size=settings.group_size,
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated integers")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--val-every", type=int, default=VAL_EVERY)
    parser.add_argument("--prompts-per-step", type=int, default=PROMPTS_PER_STEP)
    parser.add_argument("--group-size", type=int, default=GROUP_SIZE)
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--out-dir", default="skpo_real_model_benchmark")
    parser.add_argument("--workdir", default=os.path.expanduser(os.path.join("~", ".cache", "skpo_verl", "smollm2")))
    parser.add_argument("--no-evaluate", action="store_true", help="skip skpo-evaluate on base and trained checkpoints")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 step of 2 prompts x G=2, 32-token answers, 4 held-out problems, 1 seed: tests the harness only",
    )
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if args.quick:
        settings = Settings(
            steps=1, val_every=1, prompts_per_step=2, group_size=2, lr=args.lr, response_length=32, val_size=4
        )
        seeds = seeds[:1]
    else:
        settings = Settings(
            steps=args.steps,
            val_every=args.val_every,
            prompts_per_step=args.prompts_per_step,
            group_size=args.group_size,
            lr=args.lr,
        )
    run_benchmark(methods, seeds, settings, Path(args.out_dir), Path(args.workdir), not args.no_evaluate)


if __name__ == "__main__":
    main()
