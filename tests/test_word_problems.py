"""The real-model task: locally written word problems (skpo_verl/demo/word_problems.py)."""

from __future__ import annotations

import random
import re

import pandas as pd
import pytest

from skpo_verl.demo import word_problems
from skpo_verl.demo.word_problems import TEMPLATES, WordProblemSpec, problems, write_dataset
from skpo_verl.reward import compute_score


def _template(name):
    return next(t for t in TEMPLATES if t.name == name)


def test_each_template_answers_its_story_by_hand():
    assert _template("buy_give").answer({"a": 12, "b": 7, "c": 5}) == 14
    assert _template("boxes_used").answer({"a": 6, "b": 3, "c": 5}) == 13
    assert _template("change").answer({"a": 50, "b": 4, "c": 6}) == 26
    assert _template("two_days_pay").answer({"a": 9, "b": 3, "c": 5}) == 72
    assert _template("share_eat").answer({"a": 42, "b": 6, "c": 3}) == 4
    assert _template("chairs").answer({"a": 5, "b": 8, "c": 12, "d": 7}) == 35
    assert _template("reading").answer({"a": 10, "b": 4, "c": 15, "d": 80}) == 25
    assert _template("savings").answer({"a": 5, "b": 6, "c": 12, "d": 20}) == 38
    assert _template("fruit_bags").answer({"a": 20, "b": 16, "c": 4, "d": 3}) == 6
    assert _template("tickets").answer({"a": 9, "b": 4, "c": 2, "d": 3}) == 30


def test_numbers_that_break_a_story_are_refused():
    assert _template("buy_give").answer({"a": 3, "b": 2, "c": 9}) is None  # negative marbles
    assert _template("share_eat").answer({"a": 43, "b": 6, "c": 3}) is None  # 43 / 6 is not whole
    assert _template("chairs").answer({"a": 2, "b": 3, "c": 9, "d": 20}) is None  # more taken out than there are
    assert _template("reading").answer({"a": 10, "b": 4, "c": 15, "d": 55}) is None  # all 55 pages read: 0 left


def test_every_template_takes_two_to_four_operations():
    assert {t.operations for t in TEMPLATES} <= {2, 3, 4}
    assert {t.operations for t in TEMPLATES} == {2, 3, 4}


def test_split_is_fixed_by_the_seed_distinct_and_disjoint():
    spec = WordProblemSpec(train_size=120, val_size=30, seed=3)
    train, held_out = problems(spec)
    assert (len(train), len(held_out)) == (120, 30)
    assert problems(spec) == (train, held_out)
    questions = [p.question for p in train + held_out]
    assert len(set(questions)) == 150
    other_train, _ = problems(WordProblemSpec(train_size=120, val_size=30, seed=4))
    assert other_train != train
    assert {p.template for p in train} == {t.name for t in TEMPLATES}


def test_drawn_answers_are_the_arithmetic_of_the_numbers_in_the_question():
    for problem in problems(WordProblemSpec(train_size=60, val_size=10))[0]:
        numbers = [int(n) for n in re.findall(r"\d+", problem.question)]
        assert problem.answer > 0
        template = _template(problem.template)
        slots = re.findall(r"\{([a-d])\}", template.text)
        assert template.answer(dict(zip(slots, numbers))) == problem.answer


def test_max_value_scales_the_numbers():
    small = problems(WordProblemSpec(train_size=100, val_size=10, max_value=20))[0]
    large = problems(WordProblemSpec(train_size=100, val_size=10, max_value=400))[0]
    largest = lambda chosen: max(int(n) for p in chosen for n in re.findall(r"\d+", p.question))  # noqa: E731
    assert largest(small) <= 3 * 20  # TOTAL numbers reach 3 x max_value
    assert largest(large) > 3 * 100


def test_bad_specs_fail_with_the_field():
    with pytest.raises(ValueError, match="val_size"):
        WordProblemSpec(val_size=0)
    with pytest.raises(ValueError, match="max_value"):
        WordProblemSpec(max_value=5)


def test_parquet_rows_follow_verls_schema_with_unique_indices(tmp_path):
    spec = WordProblemSpec(train_size=40, val_size=8)
    train_path, val_path = write_dataset(str(tmp_path), spec)
    train, held_out = pd.read_parquet(train_path), pd.read_parquet(val_path)
    assert (len(train), len(held_out)) == (40, 8)
    row = held_out.iloc[0]
    assert row["data_source"] == word_problems.DATA_SOURCE
    assert set(row["prompt"][0]) == {"role", "content"}
    assert row["prompt"][0]["role"] == "user"
    assert row["prompt"][0]["content"] == problems(spec)[1][0].question + "\n" + word_problems.INSTRUCTION
    assert row["reward_model"]["style"] == "rule"
    assert int(row["reward_model"]["ground_truth"]) == problems(spec)[1][0].answer
    indices = [r["index"] for r in train["extra_info"]] + [r["index"] for r in held_out["extra_info"]]
    assert sorted(indices) == list(range(48))
    assert {r["split"] for r in held_out["extra_info"]} == {"val"}


def test_the_projects_reward_reads_the_sentence_the_prompt_asks_for():
    truth = str(problems(WordProblemSpec(train_size=5, val_size=1))[1][0].answer)
    assert word_problems.INSTRUCTION == "End your reply with 'The final answer is N.'"
    reply = f"3 + 4 = 7. 7 - 2 = 5.\nThe final answer is {truth}."
    assert compute_score(word_problems.DATA_SOURCE, reply, truth)["score"] == 1.0
    assert compute_score(word_problems.DATA_SOURCE, f"The final answer is {int(truth) + 1}.", truth)["score"] == -1.0
    # SmolLM2's own habit, "The answer is N", is not a final answer the reward reads.
    assert compute_score(word_problems.DATA_SOURCE, f"The answer is {truth}.", truth)["reason"] == "no_answer"


def test_cli_prints_the_two_paths(tmp_path, capsys):
    word_problems.main(["--output-dir", str(tmp_path), "--train-size", "12", "--val-size", "4", "--seed", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [f"TRAIN_FILE={tmp_path}/train.parquet", f"VAL_FILE={tmp_path}/val.parquet"]
    assert len(pd.read_parquet(tmp_path / "val.parquet")) == 4


def test_a_seeded_shuffle_does_not_leak_into_the_global_random_state():
    random.seed(11)
    expected = random.random()
    random.seed(11)
    problems(WordProblemSpec(train_size=10, val_size=2))
    assert random.random() == expected
