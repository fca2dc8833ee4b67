"""Evaluation on CPU: avg@k from saved generations, Table 1 rendering against a hand-written table."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from skpo_verl.evaluation import cli, scoring, table

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "data")
RESULTS = os.path.join(FIXTURES, "results_table1.json")


def sample(data_source: str, index: int, response: str, ground_truth: str) -> dict:
    return {"data_source": data_source, "index": index, "ground_truth": ground_truth, "response": response}


def test_avg_at_k_is_the_mean_over_problems_of_the_fraction_correct():
    generations = [
        sample("aime2024", 0, "\\boxed{25}", "25"),
        sample("aime2024", 0, "\\boxed{24}", "25"),
        sample("aime2024", 1, "Answer: 33", "33"),
        sample("aime2024", 1, "Answer: $33$", "33"),
        sample("math500", 0, "\\boxed{0.5}", "\\frac{1}{2}"),
        sample("math500", 0, "no idea", "\\frac{1}{2}"),
    ]
    correct = scoring.judge_all(generations)
    assert correct == [1.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    # aime2024: (1/2 + 2/2) / 2 = 75 %; math500: 1/2 = 50 %.
    assert scoring.avg_at_k(generations, correct, samples={"aime2024": 2, "math500": 2}) == {
        "aime2024": 75.0,
        "math500": 50.0,
    }


def test_avg_at_k_refuses_a_problem_with_the_wrong_sample_count():
    generations = [sample("amc2023", 0, "", "1")] * 3 + [sample("amc2023", 1, "", "1")] * 2
    with pytest.raises(ValueError, match=r"amc2023: avg@3 needs 3 samples per problem.*\{1: 2\}"):
        scoring.avg_at_k(generations, [0.0] * 5)


def test_avg_at_k_refuses_an_unknown_benchmark():
    with pytest.raises(ValueError, match="'gsm8k' is not a Table 1 benchmark"):
        scoring.avg_at_k([sample("gsm8k", 0, "", "1")], [0.0])


def test_markdown_table_matches_the_hand_written_one():
    with open(os.path.join(FIXTURES, "expected_table1.md")) as handle:
        assert table.render_markdown(table.load_results(RESULTS)) == handle.read()


def test_csv_table_matches_the_hand_written_one():
    with open(os.path.join(FIXTURES, "expected_table1.csv")) as handle:
        assert table.render_csv(table.load_results(RESULTS)) == handle.read()


def test_render_command_writes_markdown_csv_and_chart(tmp_path):
    assert cli.main(["render", "--results", RESULTS, "--out-dir", str(tmp_path)]) == 0
    with open(os.path.join(FIXTURES, "expected_table1.md")) as handle:
        assert (tmp_path / "table1.md").read_text() == handle.read()
    assert (tmp_path / "table1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chart_has_one_bar_per_present_cell(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    saved = {}
    monkeypatch.setattr(plt.Figure, "savefig", lambda figure, path, dpi: saved.update(figure=figure))
    table.render_chart(table.load_results(RESULTS), str(tmp_path / "chart.png"))
    llama, toy = saved["figure"].axes
    # Llama group: 3 + 3 + 1 + 2 + 1 + 1 + 3 cells; Toy: 2 rows x 9 columns (with Avg.).
    assert (len(llama.patches), len(toy.patches)) == (14, 18)
    assert [label.get_text() for label in llama.get_xticklabels()][-1] == "Avg."


def test_score_command_adds_a_row_and_rerenders(tmp_path):
    generations = [sample("math500", index, "\\boxed{2}", "2") for index in range(2) for _ in range(3)]
    generations += [sample("aime2025", 0, "\\boxed{70}" if n < 8 else "\\boxed{1}", "70") for n in range(32)]
    path = tmp_path / "gen.jsonl"
    path.write_text("".join(json.dumps(g) + "\n" for g in generations))
    results = tmp_path / "results.json"
    shutil.copy(RESULTS, results)
    args = ["score", "--generations", str(path), "--base-model", "Toy", "--method", "C", "--results", str(results)]
    assert cli.main(args) == 0
    entry = table.load_results(str(results))["entries"][-1]
    assert entry == {"base_model": "Toy", "method": "C", "scores": {"math500": 100.0, "aime2025": 25.0}}
    assert "| C | – | **25.0** | – | **100.0** | – | – | – | – | – |" in (tmp_path / "table1.md").read_text()
    # Scoring the same method again replaces its row instead of adding one.
    assert cli.main(args) == 0
    assert len(table.load_results(str(results))["entries"]) == 10


def test_results_entry_without_scores_is_refused(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps({"entries": [{"base_model": "X", "method": "Y"}]}))
    with pytest.raises(ValueError, match="entry 0 lacks scores"):
        table.load_results(str(bad))


def test_score_command_reports_a_short_problem_without_a_traceback(tmp_path, capsys):
    path = tmp_path / "gen.jsonl"
    path.write_text(json.dumps(sample("math500", 0, "\\boxed{2}", "2")) + "\n")
    results = str(tmp_path / "r.json")
    args = ["score", "--generations", str(path), "--base-model", "X", "--method", "Y", "--results", results]
    assert cli.main(args) == 1
    assert "math500: avg@3 needs 3 samples per problem" in capsys.readouterr().err
