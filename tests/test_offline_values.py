"""`python -m skpo_verl.training.offline_values`: the run it derives from a launcher, and the dump -> values
arithmetic."""

import os
import sys
from pathlib import Path

import pytest

from skpo_verl.training.offline_values import estimation_overrides, run_overrides, success_rates
from skpo_verl.verl_config import compose_ppo_config

LAUNCHER = Path(__file__).resolve().parents[1] / "examples" / "cpu_tiny_skpo.sh"


def _dumped(text, truth, scores, group="g"):
    return [
        {"input": text, "gts": truth, "score": score, "uid": f"{group}_{session}_0"}
        for session, score in enumerate(scores)
    ]


def test_success_rates_are_the_mean_of_r_plus_one_over_two_per_training_row():
    dumped = [
        *_dumped("Add 1, 2.", "3", [1.0, -1.0, 1.0, 1.0]),  # 3 of 4 right: 0.75
        *_dumped("Add 2, 2.", "4", [-1.0, -1.0, -1.0, -1.0]),  # 0
        # The same problem in two training rows (indices 7 and 8): 8 answers pooled, 5 right -> 0.625.
        *_dumped("Add 3, 3.", "6", [1.0, 1.0, -1.0, 1.0], group="a"),
        *_dumped("Add 3, 3.", "6", [1.0, -1.0, 1.0, -1.0], group="b"),
    ]
    keys = [5, "six", 7, 8, 9]
    texts = ["Add 1, 2.", "Add 2, 2.", "Add 3, 3.", "Add 3, 3.", "Add 9, 9, 9, 9, 9, 9, 9."]
    truths = ["3", "4", "6", "6", "63"]
    rates, counts, missing = success_rates(dumped, keys, texts, truths, n0=4)
    assert rates == {5: 0.75, "six": 0.0, 7: 0.625, 8: 0.625}
    assert counts == {5: 4, "six": 4, 7: 8, 8: 8}
    assert missing == [9]  # not answered: verl's overlong filter drops a row from validation as from training


def test_success_rates_refuse_a_dump_that_does_not_fit_the_training_rows():
    dumped = _dumped("Add 1, 2.", "3", [1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="3 dumped answers, expected n0=4"):
        success_rates(dumped, [0], ["Add 1, 2."], ["3"], n0=4)
    with pytest.raises(ValueError, match="match no training row"):
        success_rates(dumped, [0], ["Add 1, 2.\n"], ["3"], n0=3)
    with pytest.raises(ValueError, match="reward 2.0"):
        success_rates(_dumped("Add 1, 2.", "3", [2.0]), [0], ["Add 1, 2."], ["3"], n0=1)


def test_a_launcher_prints_its_overrides_and_the_estimate_runs_verls_validation_on_the_training_files(tmp_path):
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # the launcher's python3 is this one
    env = {**os.environ, "PATH": path, "TASK": "long", "WORKDIR": str(tmp_path)}
    overrides = run_overrides(["bash", str(LAUNCHER)], env=env)
    assert f"data.train_files={tmp_path}/long/data/train.parquet" in overrides
    assert "data.max_response_length=64" in overrides  # the long task's budget, read from the task
    config = compose_ppo_config(overrides)
    extra = estimation_overrides(config, n0=8, dump_dir="/tmp/dump")
    assert extra == [
        "trainer.val_only=True",
        "trainer.val_before_train=True",
        f"data.val_files=['{tmp_path}/long/data/train.parquet']",
        "data.val_max_samples=-1",
        "data.validation_shuffle=False",
        "actor_rollout_ref.rollout.val_kwargs.n=8",
        "actor_rollout_ref.rollout.val_kwargs.do_sample=True",
        "actor_rollout_ref.rollout.val_kwargs.temperature=1.0",  # the rollout's own sampling, not greedy
        "actor_rollout_ref.rollout.val_kwargs.top_p=1",
        "actor_rollout_ref.rollout.val_kwargs.top_k=-1",
        "trainer.validation_data_dir=/tmp/dump",
    ]
    estimated = compose_ppo_config([*overrides, *extra])
    assert list(estimated.data.val_files) == [f"{tmp_path}/long/data/train.parquet"]
    assert estimated.actor_rollout_ref.rollout.val_kwargs.n == 8 and estimated.trainer.val_only
    # A direct verl command line: its overrides are its arguments.
    assert run_overrides(["python", "-m", "verl.trainer.main_ppo", "a=1", "+b=2"]) == ["a=1", "+b=2"]
