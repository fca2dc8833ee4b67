"""The CPU demo's pieces: the chain-sum task, its warm start, and the learning-curve report
read from verl's own file logger."""

from __future__ import annotations

import pathlib

import pandas as pd
import pytest
import torch

from skpo_verl.demo import task
from skpo_verl.demo.report import format_table, learning_curve, read_metrics, report
from skpo_verl.demo.tiny_model import COMPACT_CHAT_TEMPLATE, TinyModelSpec, build_tiny_model
from skpo_verl.demo.warm_start import WarmStartSpec, _example, warm_start


def test_worked_solution_and_a_first_step_slip_carried_through():
    assert task.prompt_text((3, 5, 4)) == "Add 3, 5, 4."
    assert task.worked_solution((3, 5, 4)) == "3+5=8. 8+4=12.\nAnswer: 12"
    assert task.worked_solution((3, 5, 4), first_step_slip=1) == "3+5=9. 9+4=13.\nAnswer: 13"
    assert task.worked_solution((2, 2, 2, 2)) == "2+2=4. 4+2=6. 6+2=8.\nAnswer: 8"


def test_problems_split_is_fixed_by_the_seed_and_held_out_tuples_are_unseen():
    spec = task.TaskSpec()  # 3 terms of 1..4: 64 tuples, 16 held out
    train, val = task.problems(spec)
    assert (len(train), len(val)) == (48, 16)
    assert set(train).isdisjoint(val)
    assert task.problems(spec) == (train, val)
    assert task.problems(task.TaskSpec(seed=1))[1] != val
    harder_train, harder_val = task.problems(task.TaskSpec(terms=4, max_operand=6, val_size=50))
    assert (len(harder_train), len(harder_val)) == (6**4 - 50, 50)
    with pytest.raises(ValueError, match="val_size"):
        task.TaskSpec(max_operand=2, terms=2, val_size=4)


def test_rows_follow_verls_schema_with_unique_indices(tmp_path):
    train_path, val_path = task.write_dataset(str(tmp_path / "a"))
    train, val = pd.read_parquet(train_path), pd.read_parquet(val_path)
    indices = [row["index"] for row in list(train["extra_info"]) + list(val["extra_info"])]
    assert sorted(indices) == list(range(64))
    first = task.problems(task.TaskSpec())[0][0]
    assert list(train["prompt"][0]) == [{"role": "user", "content": task.prompt_text(first)}]
    assert train["reward_model"][0] == {"style": "rule", "ground_truth": str(sum(first))}
    again = task.write_dataset(str(tmp_path / "b"))
    for a, b in zip((train_path, val_path), again):
        assert pathlib.Path(a).read_bytes() == pathlib.Path(b).read_bytes()


def test_the_benchmark_task_is_three_numbers_of_1_to_9_with_64_held_out_and_a_longer_warm_start():
    from skpo_verl.demo.prepare import TASKS, prepare

    spec, warm = TASKS["benchmark"]
    train, val = task.problems(spec)
    assert (len(train), len(val)) == (9**3 - 64, 64)
    assert max(sum(operands[:2]) for operands in train) == 18  # two-digit partial sums
    assert warm.steps == 2 * TASKS["demo"][1].steps and warm.slip_rate == TASKS["demo"][1].slip_rate
    with pytest.raises(ValueError, match="unknown task 'hard'; choose one of: demo, benchmark, long"):
        prepare("unused", "hard")


def test_the_projects_reward_judges_the_worked_solution():
    from skpo_verl.reward import compute_score

    right = compute_score(task.DATA_SOURCE, task.worked_solution((3, 5, 4)), "12")
    slipped = compute_score(task.DATA_SOURCE, task.worked_solution((3, 5, 4), first_step_slip=1), "12")
    assert (right["score"], right["pred"]) == (1.0, "12")
    assert (slipped["score"], slipped["pred"]) == (-1.0, "13")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_model(str(tmp_path_factory.mktemp("tiny")), TinyModelSpec(chat_template=COMPACT_CHAT_TEMPLATE))
    return path, AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained


def test_warm_start_example_is_the_problem_after_a_worked_beginning(tiny):
    _, tokenizer, _ = tiny
    inputs, target = _example(tokenizer, (3, 5, 4), slipped=True, prefix_length=5)
    assert tokenizer.decode(inputs) == "3+5=9Add 3, 5, 4.\n<|im_start|>"
    assert tokenizer.decode(target) == "3+5=9. 9+4=13.\nAnswer: 13<|im_end|>"
    inputs, _ = _example(tokenizer, (3, 5, 4), slipped=False, prefix_length=0)
    assert tokenizer.decode(inputs) == "Add 3, 5, 4.\n<|im_start|>"


def test_warm_start_is_deterministic_and_lowers_the_loss(tiny):
    path, tokenizer, load = tiny
    spec = WarmStartSpec(steps=4, batch_size=8)
    first, second = load(path), load(path)
    losses = warm_start(first, tokenizer, task.TaskSpec(), spec)
    assert warm_start(second, tokenizer, task.TaskSpec(), spec) == losses
    assert losses[-1] < losses[0]
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)


def test_warm_start_builds_the_same_model_whatever_threads_the_process_runs_and_restores_them(tiny):
    """Machines with other core counts run torch with other thread counts; the warm start trains on one thread,
    so they build the same model (bit for bit), and the caller's thread count is left as it was."""
    path, tokenizer, load = tiny
    spec = WarmStartSpec(steps=3, batch_size=16)
    before = torch.get_num_threads()
    models = []
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            models.append(load(path))
            warm_start(models[-1], tokenizer, task.TaskSpec(), spec)
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)


def test_report_reads_verls_file_logger_and_writes_the_curve(tmp_path, monkeypatch):
    from verl.utils.tracking import FileLogger

    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.parent.mkdir()
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(metrics))
    logger = FileLogger("p", "e")
    held_out = f"val-core/{task.DATA_SOURCE}/acc/mean@1"
    logger.log({held_out: 0.04}, step=0)  # validation before training
    logger.log({"critic/score/mean": -0.5, "skpo/downstream/reward_mean": -0.25, "timing_s/step": 2.5}, step=1)
    logger.log({"critic/score/mean": 0.5, "timing_s/step": 2.0, held_out: 0.8}, step=2)
    logger.finish()

    curve = learning_curve(read_metrics(str(metrics)))
    assert curve.to_dict("list") == {
        "step": [0, 1, 2],
        "train_reward": [pytest.approx(float("nan"), nan_ok=True), -0.25, 0.5],
        "heldout_accuracy": [0.04, pytest.approx(float("nan"), nan_ok=True), 0.8],
        "step_time_s": [pytest.approx(float("nan"), nan_ok=True), 2.5, 2.0],
    }
    blank = ""
    assert format_table(curve).splitlines()[1:] == [
        f"{0:>4}  {blank:>12}  {'4%':>12}  {blank:>9}",
        f"{1:>4}  {'-0.25':>12}  {blank:>12}  {'2.5 s':>9}",
        f"{2:>4}  {'+0.50':>12}  {'80%':>12}  {'2.0 s':>9}",
    ]
    report(str(metrics))
    assert pd.read_csv(metrics.parent / "curve.csv")["heldout_accuracy"].tolist()[2] == 0.8
    assert (metrics.parent / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_report_without_validation_names_the_settings(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1, "data": {"critic/score/mean": 0.0}}\n')
    with pytest.raises(ValueError, match="trainer.val_before_train=True and trainer.test_freq>0"):
        learning_curve(read_metrics(str(metrics)))


def test_the_long_task_has_five_terms_256_held_out_and_a_solver_careless_at_any_carry():
    import random

    from skpo_verl.demo.prepare import TASKS
    from skpo_verl.demo.warm_start import careless_slips

    spec, warm = TASKS["long"]
    train, val = task.problems(spec)
    assert (len(train), len(val)) == (512, 256) and set(train).isdisjoint(val)
    assert warm.slip_at == "carry"
    # Slips only at carrying steps, each with probability slip_rate: over many draws of one problem whose
    # steps carry at 1, 2 and 4, the slip shares are about slip_rate there and exactly 0 at step 3.
    operands, rng = (8, 5, 9, 7, 3), random.Random(0)
    draws = [careless_slips(operands, warm, rng) for _ in range(4000)]
    shares = [sum(d[k] for d in draws) / len(draws) for k in range(4)]
    assert shares[2] == 0 and all(abs(shares[k] - warm.slip_rate) < 0.03 for k in (0, 1, 3))
    # The first-step rule draws exactly as before: one uniform number per example.
    first = TASKS["benchmark"][1]
    assert [careless_slips(operands, first, random.Random(3)) for _ in range(1)] == [random.Random(3).random() < 0.6]
    with pytest.raises(ValueError, match="slip_at='any'"):
        WarmStartSpec(slip_at="any")


def test_a_training_size_takes_the_first_tuples_after_the_held_out_ones():
    every_train, val = task.problems(task.TaskSpec(terms=3, max_operand=4, val_size=16))
    train, same_val = task.problems(task.TaskSpec(terms=3, max_operand=4, val_size=16, train_size=10))
    assert same_val == val and train == every_train[:10]
    with pytest.raises(ValueError, match="train_size=49"):
        task.TaskSpec(terms=3, max_operand=4, val_size=16, train_size=49)


def test_a_model_built_before_the_long_tasks_spec_fields_is_still_recognised(tmp_path, monkeypatch):
    import json
    from dataclasses import asdict

    from skpo_verl.demo import prepare

    spec, warm = prepare.TASKS["benchmark"]
    old_task = {k: v for k, v in asdict(spec).items() if k != "train_size"}
    old_warm = {k: v for k, v in asdict(warm).items() if k != "slip_at"}
    marker = tmp_path / "model" / "skpo_warm_start.json"
    marker.parent.mkdir()
    # The marker as the builder wrote it before train_size and slip_at existed.
    marker.write_text(json.dumps({"model": asdict(prepare.DEMO_MODEL), "task": old_task, "warm_start": old_warm}))
    monkeypatch.setattr(prepare, "warm_start", lambda *args: pytest.fail("rebuilt a model that was up to date"))
    assert prepare.build_demo_model(str(tmp_path), task_spec=spec, warm_start_spec=warm) == str(tmp_path / "model")
    # A long-task spec (the new fields set) is a different model.
    long_spec, long_warm = prepare.TASKS["long"]
    with pytest.raises(pytest.fail.Exception, match="rebuilt"):
        prepare.build_demo_model(str(tmp_path), task_spec=long_spec, warm_start_spec=long_warm)
