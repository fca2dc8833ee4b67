"""Run `examples/cpu_tiny_skpo.sh` (verl's `python -m verl.trainer.main_ppo`) in a subprocess
and read back what verl logged: per-step metrics (file logger, JSONL), rollout dumps
(`trainer.rollout_data_dir`) and checkpoints.

Each run gets its own Ray cluster (`address=local`) in its own temp dir, so it neither joins
nor disturbs another Ray cluster on the machine, and every Ray process it started can be
found afterwards by that dir and ended by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "examples" / "cpu_tiny_skpo.sh"


@dataclass
class Run:
    returncode: int
    output: str
    metrics: dict[int, dict]  # step -> metrics logged at that step
    rollouts: dict[int, list[dict]]  # step -> dumped rows
    wall_s: float
    killed: bool


def ray_processes(temp_dir: Path) -> list[psutil.Process]:
    """Processes of the Ray cluster whose session lives under `temp_dir`."""
    marker = str(temp_dir)
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in process.info["cmdline"] or ()):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def wait_for_ray_exit(temp_dir: Path, timeout_s: float = 15.0) -> list[int]:
    """Give the cluster's processes time to exit on their own; return the pids still alive."""
    deadline = time.monotonic() + timeout_s
    while (alive := ray_processes(temp_dir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return [process.pid for process in alive]


def end_ray_processes(temp_dir: Path, grace_s: float = 10.0) -> list[int]:
    """End the Ray processes of this run (by pid, TERM then KILL); return the pids found."""
    processes = ray_processes(temp_dir)
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=grace_s)
    return [process.pid for process in processes]


def read_metrics(path: Path) -> dict[int, dict]:
    metrics: dict[int, dict] = defaultdict(dict)
    if path.exists():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            metrics[int(record["step"])].update(record["data"])
    return dict(metrics)


def read_rollouts(directory: Path) -> dict[int, list[dict]]:
    rollouts = {}
    if directory.exists():
        for path in directory.glob("*.jsonl"):
            rollouts[int(path.stem)] = [json.loads(line) for line in path.read_text().splitlines()]
    return rollouts


def rows_per_prompt(rows: list[dict]) -> dict[str, list[tuple[int, int]]]:
    """Group dumped rows by prompt uid: uid -> [(session_id, output_index)], padding excluded.

    verl keys a row `{uid}_{session_id}_{output_index}` (trainer/ppo/v1 agent_loop_tq.py) and
    the dump stores that key as "uid".
    """
    groups: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for row in rows:
        uid, session, output = row["uid"].rsplit("_", 2)
        if uid.startswith("pad"):
            continue
        groups[uid].append((int(session), int(output)))
    return dict(groups)


def short_ray_dir() -> Path:
    """A fresh Ray temp dir; short, because Ray's socket paths inside it must fit in 107 bytes."""
    return Path(tempfile.mkdtemp(prefix="skpo-ray-", dir="/tmp"))


def run_training(
    workdir: Path,
    run_dir: Path,
    ray_dir: Path,
    algo: str,
    steps: int,
    *overrides: str,
    ranks: int = 1,
    kill_when: Callable[[], bool] | None = None,
    timeout_s: float = 420,
    rollout: str = "hf_cpu",
) -> Run:
    """Train with the launcher on `ranks` FSDP2 ranks and the `rollout` server; `workdir` holds the tiny
    model and data.

    With `kill_when`, the run is killed (SIGKILL to its process group, no clean shutdown)
    as soon as the predicate holds, as a preempted job would be.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.jsonl"
    rollout_dir = run_dir / "rollouts"
    log_path = run_dir / "output.log"
    env = {
        **os.environ,
        "ALGO": algo,
        "WORKDIR": str(workdir),
        "STEPS": str(steps),
        "RANKS": str(ranks),
        "ROLLOUT": rollout,
        "VERL_FILE_LOGGER_PATH": str(metrics_path),
        "RAY_DEDUP_LOGS": "0",
        # Validation once before training and at the last step (and the launcher's learning-curve
        # report after a clean exit); a kill-and-resume test runs too few steps for more.
        "VAL_EVERY": "100",
    }
    command = [
        "bash",
        str(LAUNCHER),
        "trainer.logger=[console,file]",
        f"trainer.rollout_data_dir={rollout_dir}",
        "+ray_kwargs.ray_init.address=local",
        f"+ray_kwargs.ray_init._temp_dir={ray_dir}",
        *overrides,
    ]
    started = time.monotonic()
    killed = None
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        while process.poll() is None:
            if kill_when is not None and kill_when():
                killed = "on request"
            elif time.monotonic() - started > timeout_s:
                killed = f"after {timeout_s} s"
            if killed:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                break
            time.sleep(0.5)
    output = log_path.read_text() + (f"\n[harness] killed {killed}" if killed else "")
    return Run(
        returncode=process.returncode,
        output=output,
        metrics=read_metrics(metrics_path),
        rollouts=read_rollouts(rollout_dir),
        wall_s=time.monotonic() - started,
        killed=killed is not None,
    )
