"""The learning benchmark's harness (`skpo_verl.benchmarks.learning`).

The arithmetic (decoded tokens per step, cost to reach the baseline's final accuracy, the
table) is checked on hand-made metrics and curves; the e2e test runs `--quick` (2 steps per
method, 1 seed, 4 held-out prompts) through verl's real trainer and checks the outputs'
shape only: no timing or accuracy assertion.
"""

import json
import math

import pandas as pd
import pytest

from skpo_verl.benchmarks import learning, learning_methods, learning_report
from skpo_verl.benchmarks.learning_methods import METHODS, SEGMENT_JUDGE, Settings
from skpo_verl.benchmarks.learning_report import cost_to_reach, format_markdown, run_points, summary_table
from skpo_verl.demo.report import decoded_tokens, read_metrics

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
    # Seeds reaching 0.6 on their own curves: GRPO's seed 1 (0.7 at step 4), not seed 0; both SKPO seeds.
    assert table.loc["grpo", "seeds_reaching"] == 1 and table.loc["skpo", "seeds_reaching"] == 2
    # GRPO's 95% t-interval: 0.6 -+ 12.706 x sqrt(0.02) / sqrt(2) = 0.6 -+ 1.2706.
    assert table.loc["grpo", "final_accuracy_ci_low"] == pytest.approx(0.6 - 1.2706)
    assert table.loc["grpo", "final_accuracy_ci_high"] == pytest.approx(0.6 + 1.2706)
    markdown = learning_report.format_markdown(summary_table(points))
    assert "| slow | 30.0% ± 0.0% | — | 1 | not reached | not reached | not reached | 0/1 | 1000 | 2.0 s |" in markdown
    assert "| skpo | 80.0% ± 0.0% | [80.0%, 80.0%] | 2 | 2 | 0.50 | 0.60 | 2/2 | 1200 | 2.0 s |" in markdown
    assert "| grpo | 60.0% ± 14.1% | [-67.1%, 187.1%] | 2 | 4 | 1.00 | 1.00 | 1/2 | 1000 | 2.0 s |" in markdown


def test_paired_differences_to_grpo_and_the_mean_of_the_last_steps_by_hand():
    # 12 steps validated every step: the last 10 are steps 3..12. GRPO seeds end 0.5 / 0.7, SKPO 0.6 / 0.9.
    grpo = [0.1, 0.2, 0.3] + [0.5] * 10
    skpo = [0.1, 0.2, 0.3] + [0.6] * 9 + [0.7]
    points = pd.concat(
        [
            _points("grpo", 0, grpo[:-1] + [0.5], 1000.0),
            _points("grpo", 1, grpo[:-1] + [0.7], 1000.0),
            _points("skpo", 0, skpo[:-1] + [0.6], 1000.0),
            _points("skpo", 1, skpo[:-1] + [0.9], 1000.0),
        ],
        ignore_index=True,
    )
    last = learning_report.last_steps_mean(points).set_index(["method", "seed"])["last_mean"]
    # GRPO seed 1: nine 0.5 and a 0.7 -> 0.52; SKPO seed 1: nine 0.6 and a 0.9 -> 0.63.
    assert last[("grpo", 1)] == pytest.approx(0.52) and last[("skpo", 1)] == pytest.approx(0.63)
    table = learning_report.paired_table(points).set_index("method")
    # Final: differences 0.6 - 0.5 = 0.1 and 0.9 - 0.7 = 0.2: mean 0.15, std 0.0707, t(1) = 12.706:
    # 0.15 -+ 12.706 x 0.0707107 / sqrt(2) = 0.15 -+ 0.6353.
    assert table.loc["skpo", "final_diff"] == pytest.approx(0.15)
    assert table.loc["skpo", "final_diff_low"] == pytest.approx(0.15 - 0.6353, abs=1e-4)
    # Last 10 steps: 0.60 - 0.50 and 0.63 - 0.52: both 0.1 and 0.11 -> mean 0.105.
    assert table.loc["skpo", "last_diff"] == pytest.approx(0.105)
    assert table.loc["grpo", "final_diff"] == 0.0 and table.loc["skpo", "early"] == pytest.approx(0.6)
    markdown = learning_report.format_paired_markdown(table.reset_index())
    assert (
        "| skpo | 2 | 60.0% | 75.0% ± 21.2% | +15.0 [-48.5, +78.5] | 61.5% ± 2.1% | +10.5 [+4.1, +16.9] |" in markdown
    )


def test_the_diagnostics_pool_the_judges_agreement_over_steps():
    settings = Settings(steps=2, val_every=1)
    common = {"timing_s/step": 1.0, "response_length/mean": 10.0}
    step1 = {
        **common,
        "skpo/upstream/oracle_signed_rows_first_visit": 8,
        "skpo/upstream/oracle_agreeing_rows_first_visit": 2,
    }
    step1 |= {"skpo/upstream/oracle_signed_rows_revisit": 0, "skpo/upstream/oracle_agreeing_rows_revisit": 0}
    step1 |= {"actor/skpo/loss/upstream_clipfrac": 0.0, "skpo/upstream/first_visit_rate": 1.0}
    step2 = {
        **common,
        "skpo/upstream/oracle_signed_rows_first_visit": 4,
        "skpo/upstream/oracle_agreeing_rows_first_visit": 4,
    }
    step2 |= {"skpo/upstream/oracle_signed_rows_revisit": 4, "skpo/upstream/oracle_agreeing_rows_revisit": 1}
    step2 |= {"actor/skpo/loss/upstream_clipfrac": 0.1, "skpo/upstream/first_visit_rate": 0.5}
    points = pd.concat(
        [
            learning_report.run_points({0: {ACC: 0.1}, 1: step1, 2: step2}, settings).assign(method="skpo", seed=0),
            learning_report.run_points(_metrics([0.1, 0.2, 0.3], 640.0), settings).assign(method="grpo", seed=0),
        ],
        ignore_index=True,
    )
    table = learning_report.diagnostics_table(points).set_index("method")
    # first visits (2 + 4) / (8 + 4) = 0.5; revisits 1 / 4; clip 0.05 and first visits 0.75 on average
    assert table.loc["skpo", "agreement_first_visit"] == pytest.approx(0.5)
    assert table.loc["skpo", "agreement_revisit"] == pytest.approx(0.25)
    assert table.loc["skpo", "upstream_clipfrac"] == pytest.approx(0.05)
    assert table.loc["skpo", "first_visit_rate"] == pytest.approx(0.75)
    assert math.isnan(table.loc["grpo", "agreement_first_visit"])
    markdown = learning_report.format_diagnostics_markdown(table.reset_index())
    assert "| skpo | 50.0% (12) | 25.0% (4) | 75.0% | — | 5.0% | — |" in markdown


def test_train_prompts_are_the_tasks_first_rows_in_a_file_of_their_own(tmp_path):
    data = tmp_path / "long" / "data"
    data.mkdir(parents=True)
    pd.DataFrame({"extra_info": [{"index": i} for i in range(10)]}).to_parquet(data / "train.parquet")
    settings = Settings(30, 2, prompts_per_step=4, task="long", train_prompts=6)
    variables = learning._launcher_variables(settings, "skpo", str(tmp_path))
    assert variables["TRAIN_FILE"] == str(data / "train_first6.parquet")
    assert [row["index"] for row in pd.read_parquet(variables["TRAIN_FILE"])["extra_info"]] == [0, 1, 2, 3, 4, 5]
    assert "TRAIN_FILE" not in learning._launcher_variables(Settings(30, 2, task="long"), "skpo", str(tmp_path))
    with pytest.raises(ValueError, match="only 10 training prompts"):
        learning.train_subset(str(tmp_path), "long", 11)
    with pytest.raises(ValueError, match="--train-prompts 3 must hold at least one step's 4 prompts"):
        Settings(30, 2, prompts_per_step=4, train_prompts=3)


def test_a_finished_run_is_reused_for_the_same_settings_whatever_its_threads(tmp_path):
    record = tmp_path / "settings.json"
    wanted = {"method": "skpo", "seed": 2, "overrides": ["+algorithm.skpo.seed=2"], "steps": 50}
    assert learning.finished_run(record, wanted) is None  # never run
    record.write_text(json.dumps({**wanted, "threads": 1}))
    assert learning.finished_run(record, wanted) == {**wanted, "threads": 1}
    assert learning.finished_run(record, {**wanted, "steps": 30}) is None
    assert learning.finished_run(record, {**wanted, "seed": 3}) is None
    # A record written before threads were kept: reused, its threads unknown (the environment's).
    record.write_text(json.dumps(wanted))
    assert learning.finished_run(record, wanted) == {**wanted, "threads": None}


def test_mini_batches_set_the_actors_mini_batch_and_must_divide_the_prompts():
    assert learning_methods.settings_overrides(Settings(60, 2, prompts_per_step=32, mini_batches=4)) == [
        "actor_rollout_ref.actor.ppo_mini_batch_size=8"
    ]
    assert learning_methods.settings_overrides(Settings(50, 2)) == []
    with pytest.raises(ValueError, match="--mini-batches 3 must divide --prompts-per-step 32"):
        Settings(60, 2, prompts_per_step=32, mini_batches=3)
    # The estimate scales the measured paces by the prompts per step: 4 x the step time at 32 prompts.
    eight = learning_methods.estimated_minutes(["grpo"], 1, Settings(50, 5, task="long"))
    many = learning_methods.estimated_minutes(["grpo"], 1, Settings(50, 5, task="long", prompts_per_step=32))
    assert many - eight == pytest.approx(3 * 50 * learning_methods.TASK_DEFAULTS["long"].step_s_grpo / 60)


def test_t_interval_by_hand():
    # mean 0.94, std (ddof 1) sqrt(0.001) = 0.0316228, t(0.975, 4) = 2.776: half-width 2.776 x 0.0316228 / sqrt(5)
    # = 0.039259.
    low, high = learning_report.t_interval([0.9, 0.92, 0.94, 0.96, 0.98])
    assert (low, high) == (pytest.approx(0.900741, abs=1e-6), pytest.approx(0.979259, abs=1e-6))
    assert all(math.isnan(bound) for bound in learning_report.t_interval([0.9]))
    assert learning_report.t_interval([0.9, float("nan"), 0.9]) == (pytest.approx(0.9), pytest.approx(0.9))


def test_upfront_costs_count_at_step_0_and_the_early_curve_lists_steps_0_to_15():
    settings = Settings(steps=4, val_every=2)
    points = run_points(
        _metrics([0.25, None, 0.5, None, 0.75], 640.0), settings, upfront_samples=4096, upfront_tokens=9e4
    )
    assert list(points["cumulative_samples"]) == [4096, 4160, 4224, 4288, 4352]
    assert list(points["cumulative_tokens"]) == [90000, 90640, 91280, 91920, 92560]
    assert points["decoded_tokens"][1:].mean() == 640.0  # tokens per training step leave the estimate out
    markdown = learning_report.early_curve_markdown(points.assign(method="skpo", seed=0))
    assert "| method | 0 | 2 | 4 |" in markdown and "| skpo | 0.250 | 0.500 | 0.750 |" in markdown


def test_later_split_methods_set_the_split_and_a_prompt_budget_for_their_longest_segment():
    long = Settings(steps=50, val_every=5, task="long")  # 64-token prompts and responses
    assert learning_methods.method_overrides("skpo_split_late", long) == [
        f"+algorithm.skpo.segment_judge={SEGMENT_JUDGE}",
        "+algorithm.skpo.split_low=0.5",
        f"+algorithm.skpo.split_high={5 / 6!r}",
        "actor_rollout_ref.rollout.prompt_length=118",  # 64 + ceil(5/6 x 64) = 64 + 54
    ]
    assert learning_methods.method_overrides("skpo_split_mid", Settings(50, 1))[-1] == (
        "actor_rollout_ref.rollout.prompt_length=86"  # 64 + ceil(2/3 x 32) = 64 + 22
    )
    assert learning_methods.method_overrides("skpo", long) == [f"+algorithm.skpo.segment_judge={SEGMENT_JUDGE}"]
    assert learning_methods.method_overrides("grpo", long) == []


def test_the_two_splits_method_sets_num_splits_and_a_prompt_budget_for_both_segments():
    long = Settings(steps=50, val_every=5, task="long")  # 64-token prompts and responses
    assert learning_methods.method_overrides("skpo_two_splits", long) == [
        "+algorithm.skpo.num_splits=2",
        "actor_rollout_ref.rollout.prompt_length=128",  # 64 + 64: both segments stay under the response budget
    ]


def test_samples_are_the_answers_skpo_logged_and_prompts_x_g_without_them():
    settings = Settings(steps=2, val_every=1)  # 8 prompts x G = 8
    common = {"timing_s/step": 1.0, "response_length/mean": 10.0}
    two_splits = {**common, "skpo/upstream/rows": 15, "skpo/downstream/rows": 120}
    two_splits |= {"skpo/rollout/candidate_tokens_mean": 4.0, "skpo/downstream/answer_length_mean": 5.0}
    points = learning_report.run_points({1: two_splits, 2: common}, settings)
    # Step 1: 7 prompts ran both stages and 1 only the first: 15 x 8 answers; step 2 (GRPO-like): 8 x 8.
    assert list(points["samples"]) == [0, 120, 64]
    assert list(points["cumulative_samples"]) == [0, 120, 184]


def test_the_half_candidates_method_asks_for_g_over_2():
    assert METHODS["skpo_half_candidates"].overrides == (
        f"+algorithm.skpo.num_candidates={learning_methods.GROUP_SIZE // 2}",
    )


def test_every_skpo_method_sets_the_algorithm_skpo_keys_it_names():
    # The e2e test below runs one method per code path (QUICK_METHODS); the other SKPO methods
    # differ from `skpo` only by `algorithm.skpo` values, checked here through SKPO's own parser.
    from omegaconf import OmegaConf

    from skpo_verl.config import SKPOConfig, skpo_config_from_algorithm

    def parsed(name):
        # with the segment judge every one-split SKPO run gets (method_overrides)
        overrides = [
            override.lstrip("+")
            for override in (*METHODS[name].overrides, f"+algorithm.skpo.segment_judge={SEGMENT_JUDGE}")
        ]
        assert all(override.startswith("algorithm.skpo.") for override in overrides)
        return skpo_config_from_algorithm(OmegaConf.from_dotlist(overrides).get("algorithm", {}))

    judged = SKPOConfig.from_mapping({"segment_judge": SEGMENT_JUDGE})
    assert parsed("skpo") == judged
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
    assert parsed("skpo_first_visit_zero").first_visit_upstream == "zero"
    assert parsed("skpo_upstream_rms").upstream_norm == "rms"
    assert parsed("skpo_spatial").upstream_baseline == "spatial"
    both = parsed("skpo_spatial_token_mean")
    assert (both.upstream_baseline, both.loss.aggregation) == ("spatial", "token_mean")
    perfect = parsed("skpo_oracle_token_mean")
    assert (perfect.upstream_advantage, perfect.loss.aggregation) == ("oracle", "token_mean")
    assert parsed("skpo_offline_values") == judged  # its values file is added per seed
    assert METHODS["skpo_offline_values"].offline_values
    assert {name for name, method in METHODS.items() if method.algo == "skpo"} == {
        "skpo",
        "skpo_wo_skip",
        "skpo_wo_mc",
        "skpo_half_candidates",
        "skpo_upstream_0.1",
        "skpo_upstream_0",
        "skpo_first_visit_zero",
        "skpo_upstream_rms",
        "skpo_offline_values",
        "skpo_spatial",
        "skpo_spatial_token_mean",
        "skpo_oracle_token_mean",
        "skpo_split_mid",
        "skpo_split_late",
        "skpo_two_splits",
        "skpo_oracle",
        "skpo_random",
        "skpo_token_mean",
    }
    assert parsed("skpo_oracle").upstream_advantage == "oracle"
    assert parsed("skpo_random").upstream_advantage == "random"
    assert parsed("skpo_token_mean").loss.aggregation == "token_mean"


def test_cispo_is_verls_own_loss_under_grpos_path():
    # The benchmark's cispo method composes with verl 0.9.1's ppo_trainer.yaml and names a loss verl registers.
    from test_launchers import compose_verl
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    assert METHODS["cispo"].algo == "grpo"
    actor = compose_verl(list(METHODS["cispo"].overrides)).actor_rollout_ref.actor
    assert (actor.policy_loss.loss_mode, actor.clip_ratio_low, actor.clip_ratio_high) == ("cispo", 0.2, 0.28)
    assert get_policy_loss_fn("cispo").__name__ == "compute_policy_loss_cispo"


def test_the_default_methods_of_each_task_and_the_estimate_printed_before_a_run():
    assert (
        learning_methods.TASK_DEFAULTS["benchmark"].methods == learning_methods.ORIGINAL_METHODS
    )  # today's benchmark, unchanged
    assert learning_methods.TASK_DEFAULTS["benchmark"].seeds == (0, 1, 2)
    long = learning_methods.TASK_DEFAULTS["long"]
    assert len(long.seeds) >= 5 and set(learning_methods.ORIGINAL_METHODS) <= set(long.methods)
    # benchmark, 8 methods x 3 seeds x 50 steps every step: 3 x (2 x (50 + 60 + 56.1) + 6 x (50 + 80 + 56.1)) s
    minutes = learning_methods.estimated_minutes(list(learning_methods.ORIGINAL_METHODS), 3, Settings(50, 1))
    assert minutes == pytest.approx(3 * (2 * 166.1 + 6 * 186.1) / 60)
    # One offline estimate per seed for skpo_offline_values.
    with_values = learning_methods.estimated_minutes(["skpo", "skpo_offline_values"], 1, Settings(50, 1))
    assert with_values == pytest.approx((2 * 186.1 + learning_methods.TASK_DEFAULTS["benchmark"].offline_values_s) / 60)
    # Two runs at a time: the measured throughput (1.19x the runs per hour), not 2x.
    assert learning_methods.estimated_minutes(
        list(learning_methods.ORIGINAL_METHODS), 3, Settings(50, 1), jobs=2
    ) == pytest.approx(minutes / 1.19)


# Two launches at a time (--jobs 2): verl's stock GRPO, and SKPO's agent loop and loss with "w/o MC"'s third
# generation per prompt, whose tokens the harness must count. CISPO is verl's loss under GRPO's path with two
# overrides (test_cispo_is_verls_own_loss_under_grpos_path); the default SKPO path trains in the e2e tests.
QUICK_METHODS = ["grpo", "skpo_wo_mc"]


@pytest.mark.e2e
@pytest.mark.timeout(1800)  # 2 runs of 1-2.5 min side by side on a shared 2-core machine
def test_quick_runs_methods_two_at_a_time_and_writes_csv_curves_and_table(workdir, tmp_path):
    # On the demo task, whose warm-started model the session's `workdir` already holds: no warm start here.
    out = tmp_path / "out"
    learning.main(
        [
            "--quick",
            "--task",
            "demo",
            "--methods",
            ",".join(QUICK_METHODS),
            "--jobs",
            "2",
            "--out-dir",
            str(out),
            "--workdir",
            str(workdir),
        ]
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


def test_cost_ratios_are_undefined_when_the_baseline_ends_where_it_started():
    # GRPO ends at its step-0 accuracy 0.3 (both seeds): it "reaches" its target at step 0, after 0 samples and 0
    # tokens, so no method's cost has a ratio to it. SKPO reaches 0.3 at step 2; "slow" never does.
    points = pd.concat(
        [
            _points("grpo", 0, [0.3, 0.2, 0.3], 1000.0),
            _points("grpo", 1, [0.3, 0.2, 0.3], 1000.0),
            _points("skpo", 0, [0.2, 0.2, 0.4], 1000.0),
            _points("slow", 0, [0.2, 0.2, 0.2], 1000.0),
        ],
        ignore_index=True,
    )
    table = summary_table(points)
    indexed = table.set_index("method")
    assert indexed.loc["grpo", "reach_step"] == 0 and indexed.loc["skpo", "reach_step"] == 2
    assert pd.isna(indexed.loc["grpo", "samples_ratio"]) and pd.isna(indexed.loc["skpo", "tokens_ratio"])
    markdown = format_markdown(table)
    assert "grpo ends no better than at step 0" in markdown
    skpo_row = next(line for line in markdown.splitlines() if line.startswith("| skpo |"))
    assert skpo_row.split(" | ")[5:7] == ["—", "—"]
    slow_row = next(line for line in markdown.splitlines() if line.startswith("| slow |"))
    assert slow_row.split(" | ")[5:7] == ["not reached", "not reached"]
