"""Learning benchmark: held-out accuracy of SKPO, its ablations and baselines, per step, token and second.

    python -m skpo_verl.benchmarks.learning [--task benchmark|long|demo] [--methods grpo,skpo,...] [--seeds 0,1,2]
                                            [--steps N] [--val-every K] [--prompts-per-step P] [--mini-batches M]
                                            [--train-prompts N] [--jobs J] [--out-dir DIR] [--quick]

Every run is `python -m verl.trainer.main_ppo` through the CPU launcher
(`examples/cpu_tiny_skpo.sh`) on a chain-sum task and its warm-started tiny model
(`skpo_verl.demo.prepare --task TASK`, built once before the first run and reused by every
run), each on its own local Ray cluster. `--task benchmark` (the default): 3 numbers from 1..9,
665 training / 64 held-out problems, a careless first step. `--task long`: 5 numbers from 1..9,
512 training / 256 held-out problems, a solver careless at any step that carries
(docs/learning_benchmark.md, "The long task"). `--task demo`: the CPU demo's task (48 training /
16 held-out problems), a quick look. All methods get the same prompts per step, G,
steps, learning rate, mini-batches, response budget and seeds; a seed sets `data.seed` (verl's
train sampler), `+algorithm.skpo.seed` (SKPO's split draws and prioritized sampler) and
`actor_rollout_ref.rollout.seed` (the `hf_cpu` sampling generator).

The methods and settings are in `learning_methods.py` (`METHODS`; docs/learning_benchmark.md has
the table), the report in `learning_report.py`. What is recorded, per run and step, from verl's
file-logger metrics (`skpo_verl.demo.report`): held-out accuracy (verl's greedy validation
before training and every `--val-every` steps), decoded tokens (GRPO, CISPO: prompts x G x
`response_length/mean`; SKPO: the prompts' candidate tokens, `skpo/upstream/rows` x
`skpo/rollout/candidate_tokens_mean`, plus the answers, `skpo/downstream/rows` x
`skpo/downstream/answer_length_mean`, plus "w/o MC"'s completions), samples (answers: prompts x G
per step, the same for every method but `skpo_two_splits`, whose answers SKPO counts) and wall
time (the sum of `timing_s/step`: training only), and the upstream diagnostics SKPO logs (the
segment judge's sign agreement, first visits, the upstream clip fraction).

Outputs in `--out-dir`: `points.csv` (every run and step), `accuracy_vs_step.png`,
`accuracy_vs_tokens.png`, `accuracy_vs_wall.png` (mean over seeds, min-max band), `table.md`
(final accuracy with its 95% t-interval over seeds, samples and decoded tokens needed to reach
GRPO's final accuracy, the paired per-seed differences to GRPO of the final accuracy and of the
mean of the last 10 steps, the accuracy at step 10, the upstream diagnostics) and
`early_curve.md` (the mean held-out accuracy at the validated steps 0-15).

`--jobs J` runs J launcher runs at a time, each with OMP_NUM_THREADS = cores / J; a finished run
with the same settings is reused (delete `runs/` to start over), so an interrupted benchmark
resumes where it stopped. `estimated_minutes` prints the expected time first. Two runs at a time finish about
1.2x as many runs per hour as one on the 2-core build machine (docs/learning_benchmark.md, "Threads and --jobs").
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from skpo_verl.benchmarks.cpu_demo import LAUNCHER, _end_ray, load_average, run_launcher
from skpo_verl.benchmarks.learning_methods import (
    BASELINE,
    LAUNCHER_VARIABLES,
    METHODS,
    N0,
    TASK,
    TASK_DEFAULTS,
    Settings,
    estimated_minutes,
    method_overrides,
    seed_overrides,
    settings_overrides,
)
from skpo_verl.benchmarks.learning_report import run_points, write_reports
from skpo_verl.demo.report import read_metrics


def _launcher_variables(settings: Settings, algo: str, workdir: str) -> dict[str, str]:
    launcher_variables = {name: str(getattr(settings, field)) for name, field in LAUNCHER_VARIABLES.items()}
    if settings.train_prompts is not None:
        launcher_variables["TRAIN_FILE"] = str(train_subset(workdir, settings.task, settings.train_prompts))
    return {**launcher_variables, "ALGO": algo, "WORKDIR": workdir}


def train_subset(workdir: str, task: str, prompts: int) -> Path:
    """The task's first `prompts` training rows as a parquet of their own (written once, beside the task's data)."""
    data = Path(workdir) / task / "data"
    path = data / f"train_first{prompts}.parquet"
    if not path.exists():
        rows = pd.read_parquet(data / "train.parquet")
        if len(rows) < prompts:
            raise ValueError(f"--train-prompts {prompts}: the {task} task has only {len(rows)} training prompts")
        rows.head(prompts).to_parquet(path)
    return path


def offline_values(seed: int, settings: Settings, workdir: str, out_dir: Path, n0: int) -> dict:
    """SPO's offline estimate for one seed (`skpo_verl.training.offline_values` through the launcher, its rollout seeded
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


def finished_run(record: Path, wanted: dict) -> dict | None:
    """The record of a finished run with the `wanted` settings, or None. The record also holds the run's
    OMP_NUM_THREADS (`threads`, None = the environment's), for the record only: a run is one draw whatever
    its threads (a seed does not repeat a run; docs/learning_benchmark.md, "Threads and --jobs"), so a
    benchmark resumed with another --jobs keeps its finished runs."""
    if not record.exists():
        return None
    recorded = json.loads(record.read_text())
    recorded.setdefault("threads", None)  # records written before threads were kept
    return recorded if {k: v for k, v in recorded.items() if k != "threads"} == wanted else None


def train(
    method: str,
    seed: int,
    settings: Settings,
    workdir: str,
    run_dir: Path,
    values: dict | None = None,
    threads: int | None = None,
) -> dict[int, dict]:
    """One launcher run; returns verl's metrics by step. Reuses a finished run with the same settings.

    `threads`: OMP_NUM_THREADS for the run's processes (when runs share the machine), or None for the
    environment's own."""
    record = run_dir / "settings.json"
    overrides = method_overrides(method, settings) + settings_overrides(settings)
    if values is not None:
        overrides.append(f"+algorithm.skpo.tracker.initial_values={values['path']}")
    wanted = {"method": method, "seed": seed, "overrides": overrides, **asdict(settings)}
    finished = finished_run(record, wanted)
    if finished is not None:
        print(f"  {method} seed {seed}: reusing {run_dir} (threads: {finished['threads'] or 'default'})", flush=True)
        return read_metrics(str(run_dir / "metrics.jsonl"))
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    variables = _launcher_variables(settings, METHODS[method].algo, workdir)
    if threads is not None:
        variables |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
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
    record.write_text(json.dumps({**wanted, "threads": threads}))
    return read_metrics(str(run_dir / "metrics.jsonl"))


def run_benchmark(
    methods: list[str],
    seeds: list[int],
    settings: Settings,
    out_dir: Path,
    workdir: str,
    n0: int = N0,
    jobs: int = 1,
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
    if jobs < 1:
        raise ValueError(f"--jobs {jobs} must be >= 1")
    out_dir.mkdir(parents=True, exist_ok=True)
    prepare(workdir, settings.task)  # the warm start, once, outside every run's time
    if settings.train_prompts is not None:
        train_subset(workdir, settings.task, settings.train_prompts)
    print(
        f"task {settings.task}: {len(methods)} methods x {len(seeds)} seeds x {settings.steps} steps: about "
        f"{estimated_minutes(methods, len(seeds), settings, jobs):.0f} min at the pace measured on the 2-core build "
        f"machine{f' over {jobs} jobs at a time' if jobs > 1 else ''} ({load_average()})",
        flush=True,
    )
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None

    def one_run(seed: int, method: str) -> pd.DataFrame:
        values = offline_values(seed, settings, workdir, out_dir, n0) if METHODS[method].offline_values else None
        run_dir = out_dir / "runs" / f"{method}_seed{seed}"
        by_step = train(method, seed, settings, workdir, run_dir, values, threads)
        upfront = {"upfront_samples": values["answers"], "upfront_tokens": values["tokens"]} if values else {}
        return run_points(by_step, settings, **upfront).assign(method=method, seed=seed)

    # Seed-major: an interrupted benchmark still has every method at the first seeds.
    order = [(seed, method) for seed in seeds for method in methods]
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        frames = list(pool.map(lambda run: one_run(*run), order))
    points = pd.concat(frames, ignore_index=True)
    points = points[["method", "seed", *[c for c in points.columns if c not in ("method", "seed")]]]
    markdown = write_reports(points, out_dir, settings.task)
    print(markdown or f"no table.md: its ratios are to {BASELINE}, which is not among --methods")
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
    parser.add_argument("--prompts-per-step", type=int, default=None, help="prompts per step (default 8)")
    parser.add_argument(
        "--mini-batches", type=int, default=1, help="actor updates per step (the paper: 4; default 1, the CPU runs')"
    )
    parser.add_argument(
        "--train-prompts", type=int, default=None, help="RL on the task's first N training prompts (default: all)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="launcher runs at a time (default 1)")
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
    if args.prompts_per_step is not None:
        settings = replace(settings, prompts_per_step=args.prompts_per_step)
    settings = replace(settings, mini_batches=args.mini_batches, train_prompts=args.train_prompts)
    run_benchmark(methods, seeds, settings, Path(args.out_dir), args.workdir, n0, args.jobs)


if __name__ == "__main__":
    main()
