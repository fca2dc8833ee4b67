"""`skpo-evaluate` on a held-out set outside Table 1 (`generate --data-file`, `score --samples`).

The CPU real-model measurement (docs/real_model.md) evaluates base and trained checkpoints on
the word problems' held-out parquet this way; the generation runs the real hf backend on the
tiny demo model, the judging the project's reward.
"""

from __future__ import annotations

import json

import pytest

from skpo_verl.demo.tiny_model import build_tiny_model
from skpo_verl.demo.word_problems import DATA_SOURCE, WordProblemSpec, problems, write_dataset
from skpo_verl.evaluation import cli
from skpo_verl.evaluation.generate import load_data_file


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    folder = tmp_path_factory.mktemp("word_problems")
    spec = WordProblemSpec(train_size=8, val_size=3, max_value=20)
    return write_dataset(str(folder), spec)[1], problems(spec)[1]


def read_lines(path):
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def test_data_file_generates_k_greedy_samples_per_problem_with_the_files_data_source(held_out, tmp_path):
    val_file, chosen = held_out
    model = build_tiny_model(str(tmp_path / "tiny"))
    generations = tmp_path / "gen.jsonl"
    args = ["generate", "--backend", "hf", "--model", model, "--device", "cpu", "--data-file", val_file]
    args += ["--generations", str(generations), "--samples", "2", "--temperature", "0", "--max-tokens", "4"]
    assert cli.main(args) == 0
    records = read_lines(generations)
    assert len(records) == 3 * 2
    assert {r["data_source"] for r in records} == {DATA_SOURCE}
    assert sorted((r["index"], r["sample"]) for r in records) == [(i, s) for i in (8, 9, 10) for s in (0, 1)]
    truths = {r["index"]: r["ground_truth"] for r in records}
    assert truths == {8 + offset: str(problem.answer) for offset, problem in enumerate(chosen)}
    # Greedy: both samples of a problem are the same text.
    by_problem = {}
    for record in records:
        by_problem.setdefault(record["index"], set()).add(record["response"])
    assert all(len(texts) == 1 for texts in by_problem.values())


def test_score_with_samples_reports_avg_at_k_of_a_held_out_set(held_out, tmp_path, capsys):
    _, chosen = held_out
    generations = tmp_path / "gen.jsonl"
    answers = [f"Answer: {chosen[0].answer}", "Answer: -1", f"The final answer is {chosen[2].answer}."]
    with open(generations, "w") as handle:
        for offset, (problem, response) in enumerate(zip(chosen, answers)):
            record = {"data_source": DATA_SOURCE, "index": 8 + offset, "sample": 0}
            handle.write(json.dumps({**record, "ground_truth": str(problem.answer), "response": response}) + "\n")
    results = tmp_path / "results.json"
    args = ["score", "--generations", str(generations), "--base-model", "SmolLM2-135M-Instruct", "--method", "base"]
    assert cli.main([*args, "--results", str(results), "--samples", "1"]) == 0
    assert f"{DATA_SOURCE}: avg@1 = 66.7" in capsys.readouterr().out
    entry = json.loads(results.read_text())["entries"][0]
    assert entry["scores"][DATA_SOURCE] == pytest.approx(200 / 3)


def test_score_without_samples_names_the_option_for_a_set_outside_table_1(tmp_path, capsys):
    generations = tmp_path / "gen.jsonl"
    record = {"data_source": DATA_SOURCE, "index": 0, "sample": 0, "ground_truth": "3", "response": "Answer: 3"}
    generations.write_text(json.dumps(record) + "\n")
    args = ["score", "--generations", str(generations), "--base-model", "m", "--method", "x"]
    assert cli.main([*args, "--results", str(tmp_path / "r.json")]) == 1
    assert f"{DATA_SOURCE} is not a Table 1 benchmark: give its samples per problem with --samples K" in (
        capsys.readouterr().err
    )


def test_samples_without_a_data_file_is_refused(tmp_path, capsys):
    args = ["generate", "--backend", "hf", "--model", "unused", "--data-dir", str(tmp_path), "--samples", "3"]
    assert cli.main([*args, "--generations", str(tmp_path / "g.jsonl")]) == 1
    assert "--samples goes with --data-file" in capsys.readouterr().err


def test_a_data_file_without_verls_columns_is_refused(tmp_path):
    import pandas as pd

    path = tmp_path / "bad.parquet"
    pd.DataFrame({"data_source": ["x"], "question": ["1+1"]}).to_parquet(path)
    with pytest.raises(ValueError, match=r"lacks the verl columns \['extra_info', 'prompt', 'reward_model'\]"):
        load_data_file(str(path))
