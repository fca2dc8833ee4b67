"""The learning benchmark's harness (`skpo_verl.benchmarks.learning`).

The arithmetic (decoded tokens per step, cost to reach the baseline's final accuracy, the
table) is checked on hand-made metrics and curves; the e2e test runs `--quick` (2 steps per
method, 1 seed, 4 held-out prompts) through verl's real trainer and checks the outputs'
shape only: no timing or accuracy assertion.
"""

import math

import pandas as pd
import pytest

from skpo_verl.benchmarks import learning
from skpo_verl.benchmarks.learning import METHODS, Settings, cost_to_reach, decoded_tokens, run_points, summary_table
from skpo_verl.demo.report import read_metrics

ACC = "val-core/skpo_tiny/chain_sum/acc/mean@1"


def test_decoded_tokens_count_skpo_candidates_and_answers_and_grpo_answers():
    skpo = {
        "skpo/upstream/rows": 8,
        "skpo/rollout/candidate_tokens_mean": 40.0,  # per prompt, all its candidates
        "skpo/downstream/rows": 64,
        "skpo/downstream/answer_length_mean": 20.0,
    }
    assert decoded_tokens(skpo, rows_per_step=64) == 8 * 40 + 64 * 20  # 1600
    assert decoded_tokens({"response_length/mean": 25.0}, rows_per_step=64) == 1600
    # "w/o MC": plus each prompt's completion of its kept candidate, 5 tokens on average.
    wo_mc = {**skpo, "skpo/rollout/completion_tokens_mean": 5.0}
    assert decoded_tokens(wo_mc, rows_per_step=64) == 1600 + 8 * 5


def _metrics(accuracies, tokens_per_step, step_time=2.0):
    """verl-style metrics by step for a GRPO run: accuracy where given, answers of 64 rows."""
    by_step = {0: {ACC: accuracies[0]}}
    for step in range(1, len(accuracies)):
        by_step[step] = {"timing_s/step": step_time, "response_length/mean": tokens_per_step / 64}
        if accuracies[step] is not None:
            by_step[step][ACC] = accuracies[step]
    return by_step


def test_run_points_accumulate_samples_tokens_and_wall_time():
    settings = Settings(steps=4, val_every=2)
    points = run_points(_metrics([0.25, None, 0.5, None, 0.75], 640.0), settings)
    assert list(points["step"]) == [0, 1, 2, 3, 4]
    assert list(points["cumulative_samples"]) == [0, 64, 128, 192, 256]
    assert list(points["cumulative_tokens"]) == [0, 640, 1280, 1920, 2560]
    assert list(points["wall_s"]) == [0, 2, 4, 6, 8]
    assert points["heldout_accuracy"].tolist()[::2] == [0.25, 0.5, 0.75]
    assert math.isnan(points["heldout_accuracy"][1])


def test_run_points_refuse_a_run_that_stopped_early():
    with pytest.raises(ValueError, match=r"training steps \[4\] are missing"):
        run_points({k: v for k, v in _metrics([0.25, 0.3, 0.5, 0.6, 0.7], 640.0).items() if k < 4}, Settings(4, 1))


def _curve(accuracies, tokens):
    return pd.DataFrame(
        {
            "step": range(len(accuracies)),
            "accuracy": accuracies,
            "cumulative_samples": [64 * s for s in range(len(accuracies))],
            "cumulative_tokens": [tokens * s for s in range(len(accuracies))],
        }
    )


def test_cost_to_reach_is_the_first_step_at_or_above_the_target():
    curve = _curve([0.2, 0.5, 0.8, 0.7, 0.9], tokens=100)
    assert cost_to_reach(curve, 0.8) == {"step": 2, "samples": 128.0, "tokens": 200.0}
    assert cost_to_reach(curve, 0.95) is None


def _points(method, seed, accuracies, tokens_per_step):
    return run_points(_metrics(accuracies, tokens_per_step), Settings(len(accuracies) - 1, 1)).assign(
        method=method, seed=seed
    )


def test_summary_table_ratios_to_grpo_by_hand():
    # GRPO, two seeds: final 0.5 and 0.7 -> target 0.6 (mean), first reached (mean curve) at step 4.
    # SKPO: mean curve [0.2, 0.4, 0.6, 0.6, 0.8] reaches 0.6 at step 2: samples 128 / 256 = 0.5;
    # tokens 2 x 1200 / (4 x 1000) = 0.6. "slow" never reaches 0.6.
    points = pd.concat(
        [
            _points("grpo", 0, [0.2, 0.3, 0.4, 0.5, 0.5], 1000.0),
            _points("grpo", 1, [0.2, 0.3, 0.4, 0.5, 0.7], 1000.0),
            _points("skpo", 0, [0.2, 0.4, 0.6, 0.6, 0.8], 1200.0),
            _points("skpo", 1, [0.2, 0.4, 0.6, 0.6, 0.8], 1200.0),
            _points("slow", 0, [0.2, 0.2, 0.2, 0.2, 0.3], 1000.0),
        ],
        ignore_index=True,
    )
    table = summary_table(points).set_index("method")
    assert table.attrs["target"] == pytest.approx(0.6)
    assert table.loc["grpo", "final_accuracy_mean"] == pytest.approx(0.6)
    assert table.loc["grpo", "final_accuracy_std"] == pytest.approx(math.sqrt(0.02))  # ddof 1 of 0.5, 0.7
    assert table.loc["grpo", "reach_step"] == 4 and table.loc["grpo", "samples_ratio"] == 1.0
    assert table.loc["skpo", "reach_step"] == 2
    assert table.loc["skpo", "samples_ratio"] == pytest.approx(0.5)
    assert table.loc["skpo", "tokens_ratio"] == pytest.approx(0.6)
    assert table.loc["skpo", "tokens_per_step"] == pytest.approx(1200.0)
    assert pd.isna(table.loc["slow", "reach_step"]) and pd.isna(table.loc["slow", "tokens_ratio"])
    markdown = learning.format_markdown(summary_table(points))
    assert "| slow | 30.0% ± 0.0% | 1 | not reached | not reached | not reached | 1000 | 2.0 s |" in markdown
    assert "| skpo | 80.0% ± 0.0% | 2 | 2 | 0.50 | 0.60 | 1200 | 2.0 s |" in markdown


def test_the_half_candidates_method_asks_for_g_over_2():
    assert METHODS["skpo_half_candidates"].overrides == (f"+algorithm.skpo.num_candidates={learning.GROUP_SIZE // 2}",)


def test_every_skpo_method_sets_the_algorithm_skpo_keys_it_names():
    # The e2e test below runs one method per code path (QUICK_METHODS); the other SKPO methods
    # differ from `skpo` only by `algorithm.skpo` values, checked here through SKPO's own parser.
    from omegaconf import OmegaConf

    from skpo_verl.config import SKPOConfig, skpo_config_from_algorithm

    def parsed(name):
        overrides = [override.lstrip("+") for override in METHODS[name].overrides]
        assert all(override.startswith("algorithm.skpo.") for override in overrides)
        return skpo_config_from_algorithm(OmegaConf.from_dotlist(overrides).get("algorithm", {}))

    assert parsed("skpo") == SKPOConfig.from_mapping({})
    assert parsed("skpo_wo_skip").conditioning == "continual"
    assert parsed("skpo_wo_mc").upstream_reward == "own_completion"
    assert parsed("skpo_half_candidates").num_candidates == 4
    assert (parsed("skpo_upstream_0.1").loss.upstream_weight, parsed("skpo_upstream_0.1").loss.downstream_weight) == (
        0.1,
        0.9,
    )
    assert (parsed("skpo_upstream_0").loss.upstream_weight, parsed("skpo_upstream_0").loss.downstream_weight) == (
        0.0,
        1.0,
    )
    assert {name for name, method in METHODS.items() if method.algo == "skpo"} == {
        "skpo",
        "skpo_wo_skip",
        "skpo_wo_mc",
        "skpo_half_candidates",
        "skpo_upstream_0.1",
        "skpo_upstream_0",
    }


# One method per code path through verl: stock GRPO, SKPO's agent loop and loss, verl's CISPO
# loss, and "w/o MC" (a third generation per prompt, whose tokens the harness must count).
QUICK_METHODS = ["grpo", "skpo", "cispo", "skpo_wo_mc"]


@pytest.mark.e2e
@pytest.mark.timeout(1800)  # the warm start (1-7 min on a shared 2-core machine) and 4 runs of 1-2.5 min
def test_quick_runs_methods_and_writes_csv_curves_and_table(tmp_path):
    out = tmp_path / "out"
    learning.main(
        ["--quick", "--methods", ",".join(QUICK_METHODS), "--out-dir", str(out), "--workdir", str(tmp_path / "work")]
    )

    points = pd.read_csv(out / "points.csv")
    assert list(dict.fromkeys(points["method"])) == QUICK_METHODS
    for method in QUICK_METHODS:
        assert list(points.loc[points["method"] == method, "step"]) == [0, 1, 2]
    assert points["heldout_accuracy"].notna().all()  # --quick validates every step
    trained = points[points["step"] > 0]
    assert (trained["decoded_tokens"] > 0).all() and (trained["step_time_s"] > 0).all()
    for name in ("accuracy_vs_step.png", "accuracy_vs_tokens.png", "accuracy_vs_wall.png"):
        assert (out / name).stat().st_size > 0
    table = (out / "table.md").read_text()
    for method in QUICK_METHODS:
        assert f"| {method} |" in table
    # "w/o MC" logs the tokens of its completions, and they count in its decoded tokens.
    wo_mc = read_metrics(str(out / "runs" / "skpo_wo_mc_seed0" / "metrics.jsonl"))
    assert all(wo_mc[step]["skpo/rollout/completion_tokens_mean"] >= 0 for step in (1, 2))
    assert (
        "skpo/rollout/completion_tokens_mean" not in read_metrics(str(out / "runs" / "skpo_seed0" / "metrics.jsonl"))[1]
    )
