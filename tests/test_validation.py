"""Start-up validation on verl 0.9.1's real composed config: each error names key and fix."""

import pytest

from skpo_verl.config import SKPOConfig
from skpo_verl.validation import (
    SKPOConfigError,
    check_not_half_configured,
    prompt_keys_from_extra_info,
    validate_config,
)
from skpo_verl.verl_config import compose_ppo_config

SKPO = [
    "algorithm.adv_estimator=skpo",
    "actor_rollout_ref.actor.policy_loss.loss_mode=skpo",
    "actor_rollout_ref.rollout.agent.default_agent_loop=skpo_agent",
    "actor_rollout_ref.rollout.n=8",
    # verl's default budgets (512 + 512): [s, q] reaches 512 + 0.5 * max(1024, 512) = 1024 tokens.
    "actor_rollout_ref.rollout.prompt_length=1024",
]


def test_a_complete_skpo_config_passes_with_the_paper_defaults():
    assert validate_config(compose_ppo_config(SKPO)) == SKPOConfig()


def test_num_candidates_from_one_to_g_is_accepted():
    for value in (1, 4, 8):
        assert (
            validate_config(compose_ppo_config(SKPO + [f"+algorithm.skpo.num_candidates={value}"])).num_candidates
            == value
        )


def test_overrides_under_algorithm_skpo_reach_the_parsed_config():
    parsed = validate_config(
        compose_ppo_config(SKPO + ["+algorithm.skpo.selection=extreme", "+algorithm.skpo.tracker.half_life_steps=4"])
    )
    assert parsed.selection == "extreme" and parsed.tracker.half_life_steps == 4.0 and parsed.half_life == 4.0


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.use_v1=false", "trainer.use_v1=false: SKPO supports verl's V1 trainer only. Set trainer.use_v1=true"),
        ("trainer.v1.trainer_mode=colocate_async", "Set trainer.v1.trainer_mode=sync"),
        ("actor_rollout_ref.actor.policy_loss.loss_mode=vanilla", "loss_mode=vanilla: set it to skpo"),
        ("actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent", "set it to skpo_agent"),
        ("actor_rollout_ref.rollout.n=1", "rollout.n=1: SKPO needs a group of at least 2"),
        ("algorithm.use_kl_in_reward=true", "Set algorithm.use_kl_in_reward=false"),
        ("actor_rollout_ref.actor.use_kl_loss=true", "Set actor_rollout_ref.actor.use_kl_loss=false"),
        ("actor_rollout_ref.actor.entropy_coeff=0.01", "entropy_coeff=0.01: SKPO has no entropy bonus"),
        ("algorithm.filter_groups.enable=true", "Set algorithm.filter_groups.enable=false"),
        ("algorithm.rollout_correction.rollout_is=token", "algorithm.rollout_correction is enabled"),
        ("algorithm.norm_adv_by_std_in_grpo=false", "norm_adv_by_std_in_grpo=false: SKPO does not read it"),
        (
            "+algorithm.skpo.selektion=median",
            "Unknown key(s) algorithm.skpo.selektion. Valid keys under algorithm.skpo:",
        ),
        ("+algorithm.skpo.tracker.rho=0.9", "Unknown key(s) algorithm.skpo.tracker.rho."),
        (
            "+algorithm.skpo.conditioning=sideways",
            "algorithm.skpo.conditioning='sideways' is not one of skip, continual, unconditional",
        ),
        ("+algorithm.skpo.tracker.rho_min=0.99", "rho_min=0.99 and rho_max=0.96 must satisfy"),
        ("actor_rollout_ref.rollout.prompt_length=512", "Set actor_rollout_ref.rollout.prompt_length=1024 (or more)"),
        (
            "actor_rollout_ref.rollout.max_model_len=1500",
            "Set actor_rollout_ref.rollout.max_model_len to at least 1536",
        ),
        ("+algorithm.skpo.rollout_timeout_s=0", "algorithm.skpo.rollout_timeout_s=0 must be > 0"),
        ("+algorithm.skpo.num_candidates=0", "algorithm.skpo.num_candidates=0 must be >= 1 (null = G, the paper)"),
        ("+algorithm.skpo.num_candidates=9", "num_candidates=9 exceeds actor_rollout_ref.rollout.n=8: at most G"),
    ],
)
def test_each_bad_setting_is_refused_with_its_key_and_fix(override, message):
    with pytest.raises(SKPOConfigError) as error:
        validate_config(compose_ppo_config(SKPO + [override]))
    assert message in str(error.value)


def test_all_problems_are_reported_at_once():
    with pytest.raises(SKPOConfigError) as error:
        validate_config(compose_ppo_config(["algorithm.adv_estimator=skpo", "actor_rollout_ref.rollout.n=1"]))
    text = str(error.value)
    assert "loss_mode=vanilla" in text and "default_agent_loop=single_turn_agent" in text and "rollout.n=1" in text


def test_skpo_loss_or_agent_loop_without_the_skpo_estimator_is_refused():
    with pytest.raises(SKPOConfigError, match="loss_mode=skpo needs algorithm.adv_estimator=skpo"):
        check_not_half_configured(
            compose_ppo_config(["algorithm.adv_estimator=grpo", "actor_rollout_ref.actor.policy_loss.loss_mode=skpo"])
        )
    with pytest.raises(SKPOConfigError, match="default_agent_loop=skpo_agent needs algorithm.adv_estimator=skpo"):
        check_not_half_configured(
            compose_ppo_config(
                ["algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.agent.default_agent_loop=skpo_agent"]
            )
        )
    check_not_half_configured(compose_ppo_config(["algorithm.adv_estimator=grpo"]))


def test_prompt_keys_come_from_extra_info_index_in_row_order():
    assert prompt_keys_from_extra_info([{"index": 7}, {"index": "b"}, {"index": 0, "split": "train"}]) == [7, "b", 0]


def test_missing_and_duplicated_prompt_keys_are_refused_with_row_numbers():
    with pytest.raises(
        SKPOConfigError, match=r"2 training row\(s\) in train.parquet have no extra_info.index \(first rows: \[1, 2\]\)"
    ):
        prompt_keys_from_extra_info([{"index": 1}, {"split": "train"}, None], files="train.parquet")
    with pytest.raises(
        SKPOConfigError, match=r"1 training row\(s\) repeat an extra_info.index \(rows 0 and 2 share index 5\)"
    ):
        prompt_keys_from_extra_info([{"index": 5}, {"index": 6}, {"index": 5}])


def test_length_problems_are_listed_one_per_line_with_the_others():
    config = compose_ppo_config(
        SKPO
        + [
            "actor_rollout_ref.rollout.prompt_length=512",
            "actor_rollout_ref.rollout.max_model_len=1000",
            "actor_rollout_ref.rollout.n=1",
        ]
    )
    with pytest.raises(SKPOConfigError) as error:
        validate_config(config)
    lines = str(error.value).splitlines()
    assert lines[0] == "SKPO cannot start:"
    # [s, q] <= 512 + 512 = 1024 tokens: over the prompt budget, and 1024 + 512 over the context.
    assert any(line.startswith("  - downstream prompts [s, q] reach 1024 tokens") for line in lines)
    assert any(line.startswith("  - a downstream prompt plus its answer reaches 1536 tokens") for line in lines)
    assert any(line.startswith("  - actor_rollout_ref.rollout.n=1") for line in lines)
    assert len(lines) == 4
