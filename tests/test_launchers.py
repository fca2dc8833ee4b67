"""Every example launcher's overrides compose with verl 0.9.1's own ppo_trainer.yaml and pass
verl's own config validation on CPU; a misspelt key fails."""

from __future__ import annotations

import functools
import glob
import os
import pathlib
import subprocess
from types import SimpleNamespace

import pytest
import verl
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, InstantiationException
from omegaconf import OmegaConf

from skpo_verl.config import SKPOConfig
from skpo_verl.rollout.lengths import check_lengths
from skpo_verl.validation import SKPOConfigError, check_not_half_configured, is_skpo_run
from skpo_verl.validation import validate_config as validate_skpo_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")
VERL_CONFIG_DIR = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
# Training launchers: the scripts that start verl through common.sh's run_verl.
LAUNCHERS = sorted(
    os.path.relpath(path, EXAMPLES)
    for path in glob.glob(os.path.join(EXAMPLES, "**", "*.sh"), recursive=True)
    if "\nrun_verl " in pathlib.Path(path).read_text()
)
PAPER_LAUNCHERS = [name for name in LAUNCHERS if name != "skpo_gsm8k_small.sh"]
SKPO_LAUNCHERS = [name for name in LAUNCHERS if "skpo" in name or name.startswith("ablations/")]
# Sections verl 0.9.1 turns into its dataclasses at start-up (validate_config does the actor;
# the model sections need the model files and are left out, and no launcher uses a critic). `reward` is not among them:
# verl never converts it, and RewardManagerConfig cannot be built from its own defaults
# (workers/config/reward.py:51 calls a __post_init__ that BaseConfig does not have).
DATACLASS_SECTIONS = (
    "actor_rollout_ref.rollout",
    "actor_rollout_ref.rollout.checkpoint_engine",
)


@functools.cache
def composed(name: str):
    """The launcher's final config, composed once per test session (read it, don't mutate it)."""
    return compose_verl(launcher_overrides(name))


def launcher_overrides(name: str, *extra: str, **env: str) -> list[str]:
    """Run the real launcher with PRINT_OVERRIDES=1 and return its argument list."""
    environment = {**os.environ, "PRINT_OVERRIDES": "1", "DATA_DIR": "/data/skpo", **env}
    result = subprocess.run(
        ["bash", os.path.join(EXAMPLES, name), *extra], env=environment, capture_output=True, check=True
    )
    return result.stdout.decode().split("\0")[:-1]


def compose_verl(overrides: list[str]):
    with initialize_config_dir(config_dir=VERL_CONFIG_DIR, version_base=None):
        return compose(config_name="ppo_trainer", overrides=overrides)


def validate_like_verl(config) -> None:
    """What verl's main_ppo / V1 trainer check before any GPU work."""
    from verl.trainer.ppo import core_algos
    from verl.trainer.ppo.reward import get_custom_reward_fn, resolve_reward_manager_cls
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    OmegaConf.to_container(config, resolve=True)
    validate_config(config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    for path in DATACLASS_SECTIONS:
        omega_conf_to_dataclass(OmegaConf.select(config, path))
    # verl only type-hints with AlgoConfig, but building it checks the algorithm keys' types.
    # AlgoConfig has no `skpo` field: the plugin's own section is checked by SKPOConfig.
    algorithm = OmegaConf.to_container(config.algorithm)
    skpo_section = algorithm.pop("skpo", None)
    omega_conf_to_dataclass(OmegaConf.create(algorithm))
    SKPOConfig.from_mapping(skpo_section)
    core_algos.get_adv_estimator_fn(config.algorithm.adv_estimator)
    core_algos.get_policy_loss_fn(config.actor_rollout_ref.actor.policy_loss.loss_mode)
    # SKPO's own start-up checks, as the V1 trainer shim runs them.
    if is_skpo_run(config):
        validate_skpo_config(config)
    check_not_half_configured(config)
    resolve_reward_manager_cls(config)
    reward_fn = get_custom_reward_fn(config)
    assert reward_fn(data_source="math_dapo", solution_str="Answer: 4", ground_truth="4", extra_info={})["score"] == 1.0


def test_training_launchers_are_found():
    assert len(LAUNCHERS) == 12  # 2 SKPO, 5 baselines, 4 ablations, 1 small run


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_composes_with_verl_and_passes_its_validation(name):
    config = composed(name)
    validate_like_verl(config)
    expected_train_file = "gsm8k_train.parquet" if "gsm8k" in name else "dapo_math.parquet"
    assert config.data.train_files == f"/data/skpo/{expected_train_file}"


@pytest.mark.parametrize("name", PAPER_LAUNCHERS)
def test_paper_launchers_carry_the_papers_settings(name):
    config = composed(name)
    actor = config.actor_rollout_ref.actor
    assert config.data.train_batch_size == 128
    assert config.actor_rollout_ref.rollout.n == 8
    assert actor.ppo_mini_batch_size == 32
    assert (actor.optim.lr, actor.optim.lr_warmup_steps, actor.optim.lr_scheduler_type) == (1e-6, 10, "constant")
    assert (actor.optim.weight_decay, list(actor.optim.betas), actor.optim.clip_grad) == (0.1, [0.9, 0.999], 1.0)
    assert actor.fsdp_config.dtype == "bfloat16"
    assert config.data.max_response_length == 3072
    assert config.trainer.total_training_steps == 500
    # No entropy bonus, except DAPO's (the paper's Appendix B; docs/reproduction.md, Baselines).
    expected_entropy = 0.001 if name == "baselines/dapo.sh" else 0
    assert (config.algorithm.use_kl_in_reward, actor.use_kl_loss, actor.entropy_coeff) == (
        False,
        False,
        expected_entropy,
    )
    assert config.reward.custom_reward_function.path == "pkg://skpo_verl.reward"
    expected_aggregation = "seq-mean-token-mean" if name in ("baselines/gspo.sh", "baselines/sapo.sh") else "token-mean"
    assert actor.loss_agg_mode == expected_aggregation


@pytest.mark.parametrize("name", SKPO_LAUNCHERS)
def test_skpo_launchers_select_skpo_and_room_for_the_segment(name):
    config = composed(name)
    assert config.algorithm.adv_estimator == "skpo"
    assert config.actor_rollout_ref.actor.policy_loss.loss_mode == "skpo"
    assert config.actor_rollout_ref.rollout.agent.default_agent_loop == "skpo_agent"
    # data.max_prompt_length stays the problem's budget; the rollout's prompt budget holds
    # [s, q] = problem + kept segment (at most half the longest L_q = max(initial L, response)).
    small = name == "skpo_gsm8k_small.sh"
    assert config.data.max_prompt_length == (256 if small else 1024)
    assert config.actor_rollout_ref.rollout.prompt_length == (256 + 512 // 2 if small else 1024 + 3072 // 2)
    assert check_lengths(config).max_downstream_prompt == config.actor_rollout_ref.rollout.prompt_length


def test_qwen_math_launcher_caps_answers_at_its_4096_token_context(tmp_path):
    # Offline the model's config.json is not at hand; give the check the released model's limit.
    (tmp_path / "config.json").write_text('{"max_position_embeddings": 4096}')
    config = compose_verl(launcher_overrides("skpo_qwen2.5_math_7b.sh", MODEL_PATH=str(tmp_path)))
    validate_like_verl(config)
    budget = check_lengths(config)
    assert (budget.max_downstream_prompt, budget.max_sequence, budget.min_answer_length) == (2560, 4096, 1536)
    # Without the clamp SKPO refuses to start, naming the key (a key the launcher set takes no `+`).
    refused = compose_verl(
        launcher_overrides(
            "skpo_qwen2.5_math_7b.sh", "algorithm.skpo.clamp_answers_to_context=false", MODEL_PATH=str(tmp_path)
        )
    )
    with pytest.raises(SKPOConfigError, match=r"reaches 5632 tokens.*clamp_answers_to_context=true"):
        validate_skpo_config(refused)


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("ablations/wo_skip.sh", "conditioning", "continual"),
        ("ablations/wo_mc.sh", "upstream_reward", "own_completion"),
        ("ablations/fixed_split.sh", "split_rule", "fixed"),
        ("ablations/extreme_selection.sh", "selection", "extreme"),
    ],
)
def test_each_ablation_changes_exactly_one_skpo_key(name, key, value):
    config = composed(name)
    section = OmegaConf.to_container(config.algorithm.skpo)
    assert section == {key: value}
    assert getattr(SKPOConfig.from_mapping(section), key) == value


@pytest.mark.parametrize(
    ("name", "loss_mode", "clip_low", "clip_high"),
    [
        ("baselines/grpo.sh", "vanilla", 0.2, 0.2),
        ("baselines/gspo.sh", "gspo", 0.0003, 0.0004),
        ("baselines/dapo.sh", "vanilla", 0.2, 0.28),
        ("baselines/cispo.sh", "cispo", 0.2, 0.28),
        ("baselines/sapo.sh", "sapo", 0.2, 0.2),
    ],
)
def test_baselines_use_verls_own_losses(name, loss_mode, clip_low, clip_high):
    config = composed(name)
    actor = config.actor_rollout_ref.actor
    assert (config.algorithm.adv_estimator, actor.policy_loss.loss_mode) == ("grpo", loss_mode)
    assert (actor.clip_ratio_low, actor.clip_ratio_high) == (clip_low, clip_high)
    assert config.data.max_prompt_length == 1024


def test_dapo_baseline_builds_verls_dapo_reward_manager():
    from verl.trainer.ppo.reward import get_custom_reward_fn, resolve_reward_manager_cls
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    config = composed("baselines/dapo.sh")
    # The V1 trainer's own check that DAPO's group metric is available at sampling time.
    assert PPOTrainer._resolve_filter_groups_metric(SimpleNamespace(config=config)) == "acc"
    manager = resolve_reward_manager_cls(config)(config, tokenizer=None, compute_score=get_custom_reward_fn(config))
    # DAPO's recipe gives the overlong buffer 4096 of its 20480-token budget (1/5): 3072 / 5 = 614.4 -> 614, so
    # answers past 3072 - 614 = 2458 tokens are penalised linearly up to -1.0 at 3072.
    assert manager.overlong_buffer_cfg.len == 614 and manager.max_resp_len == 3072
    assert manager.overlong_buffer_cfg.penalty_factor == 1.0


def test_dapo_baseline_carries_an_entropy_bonus_that_verls_v1_trainer_turns_on():
    config = composed("baselines/dapo.sh")
    actor = config.actor_rollout_ref.actor
    assert actor.entropy_coeff == 0.001
    # verl's V1 trainer computes entropy for the update when the coefficient is not 0 (trainer_base._update_actor),
    # and its ppo_loss subtracts entropy_coeff x token-mean entropy (workers/utils/losses.py).
    assert not actor.calculate_entropy and actor.entropy_coeff != 0.0


def test_dapo_entropy_and_overlong_buffer_follow_their_variables():
    config = compose_verl(launcher_overrides("baselines/dapo.sh", DAPO_ENTROPY_COEFF="0", DAPO_OVERLONG_BUFFER="512"))
    assert config.actor_rollout_ref.actor.entropy_coeff == 0
    assert config.reward.reward_kwargs.overlong_buffer_cfg.len == 512
    # The buffer follows the response budget: 1/5 of 2048 is 409.
    shorter = compose_verl(launcher_overrides("baselines/dapo.sh", MAX_RESPONSE_LENGTH="2048"))
    assert shorter.reward.reward_kwargs.overlong_buffer_cfg.len == 409


def test_base_model_preset_renders_plain_prompts_for_qwen_math():
    config = compose_verl(launcher_overrides("baselines/grpo.sh", BASE_MODEL="qwen2.5-math-7b"))
    assert config.actor_rollout_ref.model.path == "Qwen/Qwen2.5-Math-7B"
    template = config.actor_rollout_ref.model.custom_chat_template
    from jinja2 import Template

    assert Template(template).render(messages=[{"role": "user", "content": "What is 1+1?"}]) == "What is 1+1?"
    llama = composed("baselines/grpo.sh")
    assert llama.actor_rollout_ref.model.custom_chat_template is None


def test_extra_arguments_are_passed_last_and_win():
    config = compose_verl(launcher_overrides("skpo_llama3.2_3b_instruct.sh", "trainer.total_training_steps=3"))
    assert config.trainer.total_training_steps == 3


def test_misspelt_verl_key_fails():
    with pytest.raises(ConfigCompositionException, match="total_training_step"):
        compose_verl(launcher_overrides("skpo_llama3.2_3b_instruct.sh", "trainer.total_training_step=3"))


def test_misspelt_skpo_key_fails():
    config = compose_verl(launcher_overrides("skpo_llama3.2_3b_instruct.sh", "+algorithm.skpo.selction=extreme"))
    with pytest.raises(ValueError, match=r"algorithm\.skpo\.selction"):
        validate_like_verl(config)


def test_wrong_value_fails_verls_validation():
    config = compose_verl(launcher_overrides("baselines/grpo.sh", "actor_rollout_ref.actor.loss_agg_mode=token_mean"))
    with pytest.raises(InstantiationException, match="Invalid loss_agg_mode: token_mean"):
        validate_like_verl(config)


def test_unknown_base_model_is_refused_with_the_choices():
    result = subprocess.run(
        ["bash", os.path.join(EXAMPLES, "baselines/grpo.sh")],
        env={**os.environ, "PRINT_OVERRIDES": "1", "BASE_MODEL": "gpt2"},
        capture_output=True,
    )
    assert result.returncode != 0
    assert b"qwen2.5-math-7b, llama3.2-3b-instruct or custom" in result.stderr


def test_reward_timeout_reaches_the_reward_through_verls_reward_kwargs():
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = compose_verl(
        launcher_overrides("baselines/grpo.sh", "+reward.custom_reward_function.reward_kwargs.timeout_s=2")
    )
    reward_fn = get_custom_reward_fn(config)
    assert reward_fn.args[1] == {"timeout_s": 2}  # verl's partial(_call_with_kwargs, raw_fn, reward_kwargs)
    assert reward_fn(data_source="gsm8k", solution_str="\\boxed{3}", ground_truth="3", extra_info={})["acc"] == 1.0


@pytest.mark.parametrize("algo", ["skpo", "grpo"])
def test_cpu_launcher_with_rollout_vllm_switches_off_what_a_host_lacks_and_only_then(algo):
    from skpo_verl.benchmarks.rollout_cost import VLLM_CPU_OVERRIDES

    vllm = launcher_overrides("cpu_tiny_skpo.sh", ROLLOUT="vllm", ALGO=algo, WORKDIR="/w")
    hf_cpu = launcher_overrides("cpu_tiny_skpo.sh", ALGO=algo, WORKDIR="/w")
    assert "actor_rollout_ref.rollout.name=vllm" in vllm and "actor_rollout_ref.rollout.name=hf_cpu" in hf_cpu
    # The rollout-cost benchmark serves vLLM with the training launcher's settings.
    assert set(VLLM_CPU_OVERRIDES) <= set(vllm)
    assert {o for o in vllm if o not in hf_cpu} == {
        "actor_rollout_ref.rollout.name=vllm",
        *VLLM_CPU_OVERRIDES,
        "actor_rollout_ref.rollout.checkpoint_engine.update_weights_bucket_megabytes=512",
    }
    config = compose_verl(vllm)
    validate_like_verl(config)
    rollout = config.actor_rollout_ref.rollout
    assert (rollout.enable_sleep_mode, rollout.free_cache_engine, rollout.enforce_eager) == (False, False, True)
    assert rollout.dtype == "float32" and rollout.engine_kwargs.vllm.kv_cache_memory_bytes == 256 * 2**20
