"""MMLU-Pro and LiveCodeBench: data preparation from the public layouts, choice extraction, the code sandbox."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from skpo_verl.data_prep import prepare
from skpo_verl.evaluation import scoring
from skpo_verl.evaluation.choice import extract_choice, judge_choice
from skpo_verl.evaluation.sandbox import Limits, extract_code, judge_code, run_tests

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "data")
SUM_TESTS = {"inputs": ["1 2\n", "10 -4\n"], "outputs": ["3\n", "6\n"]}
TWO_SUM_TESTS = {"inputs": ["[2, 7, 11, 15]\n9", "[3, 2, 4]\n6"], "outputs": ["[0, 1]", "[1, 2]"], "fn_name": "twoSum"}
SUM_PROGRAM = "a, b = map(int, input().split())\nprint(a + b)\n"
TWO_SUM_PROGRAM = """class Solution:
    def twoSum(self, nums, target):
        seen = {}
        for i, x in enumerate(nums):
            if target - x in seen:
                return [seen[target - x], i]
            seen[x] = i
"""
FAST = Limits(timeout_s=2, memory_mb=512)


def prepared(source: str, tmp_path) -> tuple[pd.DataFrame, dict]:
    fixture = os.path.join(FIXTURES, f"{source}.jsonl")
    assert prepare.main(["--source", source, "--input", fixture, "--output-dir", str(tmp_path)]) == 0
    with open(tmp_path / f"{source}.report.json") as handle:
        return pd.read_parquet(tmp_path / f"{source}.parquet"), json.load(handle)


def test_mmlu_pro_rows_letter_the_options_and_refuse_inconsistent_answers(tmp_path):
    rows, report = prepared("mmlu_pro", tmp_path)
    content = rows["prompt"][0][0]["content"]
    assert content.endswith(
        "adverts must not encourage what?\n\nA. Safe practices\nB. Unsafe practices\nC. Honesty\nD. Jealousy"
    )
    assert content.startswith("Answer the following multiple choice question.")
    assert rows["prompt"][1][0]["content"].endswith("I. 48\nJ. 36")
    assert list(rows["ability"]) == ["multiple_choice"] * 2
    # 72: answer "A" but answer_index 1; 73: "D" names no option of three.
    assert report["refused"] == {"missing_answer": {"count": 2, "first_row_ids": ["72", "73"]}}


def test_livecodebench_rows_carry_public_then_private_tests_and_refuse_a_missing_func_name(tmp_path):
    rows, report = prepared("livecodebench", tmp_path)
    stdin_tests = json.loads(rows["reward_model"][0]["ground_truth"])
    assert stdin_tests == {"inputs": ["1 2\n", "10 -4\n", "0 0\n"], "outputs": ["3\n", "6\n", "0\n"]}
    assert json.loads(rows["reward_model"][1]["ground_truth"])["fn_name"] == "twoSum"
    assert "standard input" in rows["prompt"][0][0]["content"]
    assert "```python\nclass Solution:\n    def twoSum" in rows["prompt"][1][0]["content"]
    assert report["refused"] == {"missing_answer": {"count": 1, "first_row_ids": ["2"]}}


def test_livecodebench_private_tests_refuse_a_pickle_that_names_a_class():
    import base64
    import pickle
    import zlib

    from skpo_verl.data_prep.livecodebench import decode_test_cases

    crafted = base64.b64encode(zlib.compress(pickle.dumps(pd.Timestamp(0)))).decode()
    assert decode_test_cases(crafted) is None


@pytest.mark.parametrize(
    ("response", "letter"),
    [
        ("Reasoning...\nAnswer: C", "C"),
        ("so \\boxed{(B)}", "B"),
        ("Answer: J. 36", "J"),
        ("The answer is (D).", "D"),
        ("I think the answer is A, wait, the answer is (E)", "E"),
        ("I am not sure.", None),
        ("Answer: 42", None),
    ],
)
def test_choice_extraction(response, letter):
    assert extract_choice(response) == letter


def test_choice_judge_scores_the_letter_and_rejects_a_bad_ground_truth():
    assert judge_choice("Answer: B", "B") == {"acc": 1.0, "pred": "B", "reason": "correct"}
    assert judge_choice("Answer: C", "B") == {"acc": 0.0, "pred": "C", "reason": "wrong"}
    with pytest.raises(ValueError, match="one letter A-J.*skpo-prepare-data"):
        judge_choice("Answer: B", "42")


def test_code_extraction_takes_the_last_fenced_block():
    response = "Draft:\n```python\nprint(1)\n```\nFinal:\n```py\nprint(2)\n```"
    assert extract_code(response) == "print(2)\n"
    assert extract_code("no code here") is None


def test_correct_programs_pass_stdin_and_functional_tests():
    assert run_tests(SUM_PROGRAM, SUM_TESTS, FAST) == {"passed": True, "results": [True, True], "reason": "passed"}
    assert run_tests(TWO_SUM_PROGRAM, TWO_SUM_TESTS, FAST)["results"] == [True, True]


def test_a_wrong_program_fails_with_wrong_answer():
    verdict = run_tests("a, b = map(int, input().split())\nprint(a - b)\n", SUM_TESTS, FAST)
    assert (verdict["passed"], verdict["reason"], verdict["results"][0]) == (False, "wrong_answer", False)


def test_a_program_that_loops_forever_fails_with_timeout():
    verdict = run_tests("while True:\n    pass\n", SUM_TESTS, Limits(timeout_s=1, memory_mb=512))
    assert (verdict["passed"], verdict["reason"]) == (False, "timeout")


def test_a_program_that_allocates_without_bound_fails_with_a_runtime_error():
    program = "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))\n"
    verdict = run_tests(program, SUM_TESTS, Limits(timeout_s=20, memory_mb=256))
    assert (verdict["passed"], verdict["reason"]) == (False, "runtime_error")


@pytest.mark.parametrize(
    "write",
    [
        "open({target!r}, 'w').write('escaped')",
        "__import__('pathlib').Path({target!r}).write_text('escaped')",
        "__import__('os').close(__import__('os').open({target!r}, "
        "__import__('os').O_WRONLY | __import__('os').O_CREAT))",
        "__import__('os').mkdir({target!r})",
        "__import__('os').system('touch ' + {target!r})",
    ],
)
def test_a_program_that_writes_outside_its_directory_fails_and_writes_nothing(write, tmp_path):
    target = str(tmp_path / "escaped")
    statement = write.format(target=target)
    functional = TWO_SUM_PROGRAM.replace("        seen = {}\n", f"        {statement}\n        seen = {{}}\n")
    verdict = run_tests(functional, TWO_SUM_TESTS, FAST)
    assert (verdict["passed"], verdict["reason"]) == (False, "runtime_error")
    verdict = run_tests(statement + "\n" + SUM_PROGRAM, SUM_TESTS, FAST)
    assert (verdict["passed"], verdict["reason"]) == (False, "runtime_error")
    assert not os.path.exists(target)


def test_a_program_may_write_inside_its_own_directory():
    program = "open('scratch.txt', 'w').write('ok')\n" + TWO_SUM_PROGRAM
    assert run_tests(program, TWO_SUM_TESTS, FAST)["passed"] is True


def test_code_judge_reads_the_fenced_program_and_validates_the_tests():
    response = f"Here it is:\n```python\n{SUM_PROGRAM}```"
    assert judge_code(response, json.dumps(SUM_TESTS), FAST)["reason"] == "passed"
    assert judge_code("no code", json.dumps(SUM_TESTS), FAST) == {"acc": 0.0, "pred": "", "reason": "no_code"}
    with pytest.raises(ValueError, match="same length.*--source livecodebench"):
        judge_code(response, json.dumps({"inputs": ["1"], "outputs": []}), FAST)


def test_scoring_routes_each_benchmark_to_its_grader():
    generations = [
        {"data_source": "mmlu_pro", "index": 0, "ground_truth": "B", "response": "Answer: B"},
        {
            "data_source": "livecodebench",
            "index": 0,
            "ground_truth": json.dumps(SUM_TESTS),
            "response": f"```python\n{SUM_PROGRAM}```",
        },
        {"data_source": "math500", "index": 0, "ground_truth": "2", "response": "\\boxed{2}"},
        {"data_source": "mmlu_pro", "index": 1, "ground_truth": "B", "response": "\\boxed{2}"},
    ]
    assert scoring.judge_all(generations) == [1.0, 1.0, 1.0, 0.0]
