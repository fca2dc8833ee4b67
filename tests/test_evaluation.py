"""Evaluation on CPU: avg@k from saved generations, pass@k and bootstrap intervals (hand-checked), Table 1 rendering
against hand-written tables, and two runs compared."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from skpo_verl.evaluation import cli, scoring, table, uncertainty

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "data")
RESULTS = os.path.join(FIXTURES, "results_table1.json")
# Toy runs A and B with per-problem counts on all eight benchmarks (two problems each); only AIME24 differs:
# A solves 0/32 and 16/32 (avg@32 25.0), B 8/32 and 24/32 (50.0). Every other benchmark's two problems score alike.
COUNTS = os.path.join(FIXTURES, "results_counts.json")


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
    assert entry == {
        "base_model": "Toy",
        "method": "C",
        "scores": {"math500": 100.0, "aime2025": 25.0},
        "counts": {
            "math500": {"samples": 3, "correct": {"0": 3, "1": 3}},
            "aime2025": {"samples": 32, "correct": {"0": 8}},
        },
    }
    # One problem, or problems all alike: the interval is the value itself.
    row = "| C | – | **25.0** [25.0, 25.0] | – | **100.0** [100.0, 100.0] | – | – | – | – | – |"
    assert row in (tmp_path / "table1.md").read_text()
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


# --- pass@k and intervals ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("samples", "correct", "k", "expected"),
    [
        (4, 1, 2, 1 - 3 / 6),  # 1 - C(3,2)/C(4,2) = 1/2
        (4, 1, 1, 1 / 4),  # pass@1 = c/n
        (32, 8, 4, 1 - (24 * 23 * 22 * 21) / (32 * 31 * 30 * 29)),  # 1 - C(24,4)/C(32,4)
        (3, 0, 3, 0.0),
        (3, 1, 3, 1.0),  # k = n: any right sample
        (5, 4, 2, 1.0),  # fewer wrong samples than k: every draw holds a right one
    ],
)
def test_pass_at_k_is_the_unbiased_estimator(samples, correct, k, expected):
    assert uncertainty.pass_at_k(samples, correct, k) == pytest.approx(expected)


def test_pass_at_k_refuses_k_above_the_sample_count():
    with pytest.raises(ValueError, match="pass@4 needs 1 <= k <= n = 3"):
        uncertainty.pass_at_k(3, 1, 4)


def test_bootstrap_of_two_problems_draws_each_mean_with_its_binomial_probability():
    # Two problems scoring 0 and 100: a resample of two holds both (mean 50) with probability 1/2, only one of them
    # (mean 0 or 100) with 1/4 each; the 95% interval spans [0, 100].
    draws = uncertainty.bootstrap_means(np.array([0.0, 100.0]), 40_000, np.random.default_rng(0))
    shares = [np.mean(draws == value) for value in (0.0, 50.0, 100.0)]
    assert np.allclose(shares, [0.25, 0.5, 0.25], atol=4 * np.sqrt(0.25 / 40_000))
    low, high = uncertainty.percentile_interval(draws)
    assert (low, high) == (0.0, 100.0)


def test_table_with_counts_carries_hand_checked_intervals_and_pass_at_k():
    markdown = table.render_markdown(table.load_results(COUNTS))
    # AIME24 of A: problems at 0 and 50 -> resample means 0, 25, 50 -> [0.0, 50.0]. Avg. = (25 + 325)/8 = 43.75,
    # and only AIME24 varies: its three means shift Avg. to (325 + {0, 25, 50})/8 -> [40.625, 46.875].
    assert "| A | 25.0 [0.0, 50.0] | **25.0** [25.0, 25.0] |" in markdown
    assert markdown.split("\n")[4].endswith("| 43.8 [40.6, 46.9] |")
    # pass@32 of A's AIME24: one problem never solved (0), one solved (1) -> 50.0 [0.0, 100.0].
    assert "#### Toy: pass@k" in markdown and "| A | 50.0 [0.0, 100.0] |" in markdown
    # A row entered by hand (no counts) keeps its value without an interval.
    assert "| paper-style row | 12.5 | – |" in markdown
    assert "95% bootstrap interval over problems (10000 resamples, seed 0)" in markdown
    rows = table.render_csv(table.load_results(COUNTS)).splitlines()
    assert "Toy,A,AIME24,avg@32,25.00,0.00,50.00,2" in rows and "Toy,A,AIME24,pass@32,50.00,0.00,100.00,2" in rows
    assert "Toy,A,Avg.,avg@k,43.75,40.62,46.88," in rows


def test_pass_k_option_applies_one_k_and_leaves_benchmarks_with_fewer_samples_empty():
    row = table.entry_row(table.load_results(COUNTS)["entries"][0], table.Uncertainty(pass_k=4))
    # AIME24 of A: 0/32 -> 0; 16/32 -> 1 - C(16,4)/C(32,4) = 1 - 1820/35960.
    assert row.passes[0].value == pytest.approx(50.0 * (1 - 1820 / 35960)) and row.passes[0].k == 4
    assert all(cell is None for cell in row.passes[2:])  # three samples: no pass@4; and no Avg.


def test_counts_that_disagree_with_the_scores_are_refused(tmp_path):
    results = table.load_results(COUNTS)
    results["entries"][0]["scores"]["aime2024"] = 30.0
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    with pytest.raises(ValueError, match="aime2024 scores 30.0 but its counts give 25.0"):
        table.load_results(str(path))


def test_chart_draws_the_intervals_as_error_bars(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    from matplotlib.container import BarContainer

    saved = {}
    monkeypatch.setattr(plt.Figure, "savefig", lambda figure, path, dpi: saved.update(figure=figure))
    table.render_chart(table.load_results(COUNTS), str(tmp_path / "chart.png"))
    (axis,) = saved["figure"].axes
    # One bar group per method; error bars only for the methods with counts (the hand-entered row has none).
    bars = [c for c in axis.containers if isinstance(c, BarContainer)]
    assert [len(c) for c in bars] == [9, 9, 1]
    assert [c.errorbar is not None for c in bars] == [True, True, False]
    segments = bars[0].errorbar.lines[2][0].get_segments()
    assert np.allclose(segments[0][:, 1], [0.0, 50.0])  # A's AIME24 bar: 25.0 with [0.0, 50.0]


# --- comparing runs ---------------------------------------------------------------------------------------------------


def test_compare_two_entries_gives_the_paired_difference(tmp_path, capsys):
    args = ["render", "--results", COUNTS, "--compare", "A", "Toy/B", "--out-dir", str(tmp_path)]
    assert cli.main(args) == 0
    markdown = (tmp_path / "compare.md").read_text()
    # Per problem B - A = (25, 25) on AIME24: paired, every resample differs by exactly 25, though each run's own
    # interval is 50 wide. Avg.: 25/8 = 3.125.
    assert "| AIME24 | 25.0 | 50.0 | +25.0 | [+25.0, +25.0] | 2 |" in markdown
    assert "| Avg. | 43.8 | 46.9 | +3.1 | [+3.1, +3.1] | 16 |" in markdown
    assert "A,Toy/B,AIME24,25.00,50.00,25.00,25.00,25.00,2" in (tmp_path / "compare.csv").read_text()
    assert "paired 95% bootstrap interval" in capsys.readouterr().out


def test_compare_two_results_files_pairs_entries_by_base_model_and_method(tmp_path):
    before = table.load_results(COUNTS)
    after = table.load_results(COUNTS)
    # The second run solves one more AIME24 problem fully: problem 0 goes from 0/32 to 32/32.
    after["entries"][0]["counts"]["aime2024"]["correct"]["0"] = 32
    after["entries"][0]["scores"]["aime2024"] = 75.0
    after["entries"] = after["entries"][:1]  # only A is in both files
    (tmp_path / "before.json").write_text(json.dumps(before))
    (tmp_path / "after.json").write_text(json.dumps(after))
    args = ["render", "--compare", str(tmp_path / "before.json"), str(tmp_path / "after.json")]
    assert cli.main(args) == 0
    markdown = (tmp_path / "compare.md").read_text()
    assert markdown.count("### ") == 1 and "before.json: Toy/A" in markdown
    # Differences per problem (100, 0): resample means 0, 50, 100 -> [0.0, 100.0]; mean +50.0.
    assert "| AIME24 | 25.0 | 75.0 | +50.0 | [+0.0, +100.0] | 2 |" in markdown


def test_compare_refuses_entries_without_counts(capsys):
    assert cli.main(["render", "--results", RESULTS, "--compare", "Llama-3.2-3B-Instruct/GRPO", "SKPO"]) == 1
    assert "needs per-problem counts" in capsys.readouterr().err


def test_compare_names_the_entries_when_a_selector_is_unknown(capsys):
    assert cli.main(["render", "--results", COUNTS, "--compare", "A", "Z"]) == 1
    assert "'Z' names no entry; the results file has Toy/A, Toy/B" in capsys.readouterr().err
