"""End to end on CPU: SPO's offline warm start through verl's real trainer.

`python -m skpo_verl.training.offline_values` answers every training prompt of the demo task n0 = 2 times
through verl's validation path (the launcher's own rollout, agent loop and reward loop), then
an SKPO run loads the file (`+algorithm.skpo.tracker.initial_values`) for 2 steps and
checkpoints: every prompt is tracked from step 1, no upstream row is a first visit, and the
checkpointed trackers hold the file's values where a prompt was not drawn and their update
by hand where it was. Run alone with `pytest -m e2e`.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from e2e_cpu_harness import LAUNCHER, end_ray_processes, read_metrics, run_training, short_ray_dir, wait_for_ray_exit

from skpo_verl.training.initial_values import read_initial_values
from skpo_verl.training.offline_values import estimate

pytestmark = pytest.mark.e2e
N0 = 2


@pytest.mark.timeout(1800)
def test_offline_values_estimated_through_verl_seed_the_trackers_of_an_skpo_run(workdir, tmp_path):
    # 1. The estimate: verl's validation of the 48 training prompts, n0 answers each.
    ray_dir = short_ray_dir()
    values_path = tmp_path / "values.json"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "WORKDIR": str(workdir),
        "RUN_DIR": str(tmp_path / "estimate"),
    }
    command = ["bash", str(LAUNCHER), "+ray_kwargs.ray_init.address=local", f"+ray_kwargs.ray_init._temp_dir={ray_dir}"]
    try:
        with open(tmp_path / "estimate.log", "w") as log:
            summary = estimate(command, str(values_path), N0, str(tmp_path / "dump"), env=env, output=log)
    finally:
        wait_for_ray_exit(ray_dir)
        end_ray_processes(ray_dir)
        shutil.rmtree(ray_dir, ignore_errors=True)
    initial = read_initial_values(str(values_path))
    train = pd.read_parquet(workdir / "demo" / "data" / "train.parquet")
    keys = [info["index"] for info in train["extra_info"]]
    assert sorted(initial.values) == sorted(keys) and len(keys) == 48
    assert set(initial.values.values()) <= {0.0, 0.5, 1.0}  # two answers judged +-1 each
    assert initial.n0 == N0 and initial.decoded_tokens > 0 and summary["answers"] == 48 * N0
    assert initial.source["rollout"] == "hf_cpu" and initial.source["temperature"] == 1.0
    # The matching of answers to rows agrees with verl's own validation metric over the same answers:
    # its mean over prompts of each prompt's mean accuracy (0 / 1) over its n0 answers.
    logged = read_metrics(tmp_path / "dump" / "metrics.jsonl")[0]
    mean_rate = sum(initial.values.values()) / len(initial.values)
    assert logged[f"val-core/skpo_tiny/chain_sum/acc/mean@{N0}"] == pytest.approx(mean_rate, abs=1e-9)

    # 2. SKPO loads them: 2 steps, a checkpoint at step 2.
    checkpoints = tmp_path / "checkpoints"
    ray_dir = short_ray_dir()
    try:
        run = run_training(
            workdir,
            tmp_path / "run",
            ray_dir,
            "skpo",
            2,
            f"+algorithm.skpo.tracker.initial_values={values_path}",
            f"trainer.default_local_dir={checkpoints}",
            "trainer.save_freq=2",
        )
    finally:
        wait_for_ray_exit(ray_dir)
        end_ray_processes(ray_dir)
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert run.returncode == 0, run.output[-6000:]
    for step in (1, 2):
        metrics = run.metrics[step]
        assert metrics["skpo/tracker/prompts"] == 48  # every training prompt is tracked from the start
        assert metrics["skpo/upstream/first_visit_rate"] == 0.0
        # The prioritized sampler favours prompts whose estimate is 0.5, and a step can still draw 8 whose 64
        # answers are all wrong (seen once in CI: every R_I -1, so every upstream a = -1 - 0 centres to 0 and
        # every group is uniform). Then, and only then, the gradient is zero.
        uniform = metrics["critic/advantages/max"] == metrics["critic/advantages/min"] == 0.0
        assert (metrics["actor/grad_norm"] > 0) != uniform, step
    assert any(run.metrics[step]["actor/grad_norm"] > 0 for step in (1, 2))

    with open(checkpoints / "global_step_2" / "skpo_state.pt", "rb") as f:
        values = pickle.load(f)["values"]
    entries = dict(zip(values["keys"], zip(values["sums"], values["counts"], values["last_seen"])))
    drawn = {key: entry for key, entry in entries.items() if entry[2] > 0}
    assert 1 <= len(drawn) <= 16  # 8 prompts per step, drawn with replacement by the prioritized sampler
    for key, (total, count, last_seen) in entries.items():
        v0 = initial.values[key]
        if last_seen == 0:  # never drawn: exactly the file's value, as N0 = 1 / (1 - 0.875) = 8 observations
            assert (total, count) == (v0 * 8.0, 8.0)
        elif count == pytest.approx(2 ** (-1 / 8) * 8 + 1):  # drawn at step 1 only: rho = 2^(-1/8)
            # plus one observation in [0, 1] (the mean of its answers' rewards, mapped to the tracker's scale);
            # the tolerance is for the float sum (seen: 1.0000000000000004 for an all-right observation).
            observation = total - 2 ** (-1 / 8) * v0 * 8
            assert last_seen == 1 and -1e-9 <= observation <= 1.0 + 1e-9
        else:  # first drawn at step 2 (rho = 2^(-2/8) clipped to 0.875), or at both steps (rho = 2^(-1/8) twice)
            rho = 2 ** (-1 / 8)
            assert last_seen == 2 and count in (pytest.approx(8.0), pytest.approx(rho * (rho * 8 + 1) + 1))
