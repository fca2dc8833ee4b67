"""Start-up length check for SKPO's rollout, on verl's own composed config."""

import copy
import json

import pytest
import yaml
from omegaconf import OmegaConf

from skpo_verl.rollout.lengths import SKPOLengthError, check_lengths
from skpo_verl.verl_config import compose_ppo_config

PAPER = ["data.max_prompt_length=1024", "data.max_response_length=3072"]


@pytest.fixture(scope="module")
def verl_config():
    return compose_ppo_config()


def config_with(base, overrides):
    """verl's composed config with `key=value` overrides (rollout lengths interpolate data.*, as in verl)."""
    config = copy.deepcopy(base)
    for override in overrides:
        key, value = override.lstrip("+").split("=", 1)
        OmegaConf.update(config, key, yaml.safe_load(value), force_add=True)
    return config


def test_paper_setup_needs_the_rollout_prompt_length_raised_by_the_largest_split(verl_config):
    # L_q <= max(1024, 3072) = 3072, so t_q <= 3072 / 2 = 1536 and [s, q] <= 1024 + 1536 = 2560.
    with pytest.raises(SKPOLengthError) as error:
        check_lengths(config_with(verl_config, PAPER))
    message = str(error.value)
    assert "downstream prompts [s, q] reach 2560 tokens" in message
    assert "Set actor_rollout_ref.rollout.prompt_length=2560" in message

    budget = check_lengths(config_with(verl_config, [*PAPER, "actor_rollout_ref.rollout.prompt_length=2560"]))
    assert (budget.max_split_length, budget.max_downstream_prompt, budget.max_sequence) == (1536, 2560, 5632)
    assert budget.min_answer_length == 3072


def test_initial_length_above_the_response_budget_names_both_keys(verl_config):
    config = config_with(verl_config, ["data.max_prompt_length=512", "data.max_response_length=256"])
    with pytest.raises(SKPOLengthError) as error:
        check_lengths(config)
    message = str(error.value)
    # t_max = 0.5 * max(1024, 256) = 512 > 256.
    assert "split lengths reach 512 tokens" in message
    assert "Raise data.max_response_length to at least 512" in message
    assert "lower +algorithm.skpo.tracker.initial_length to at most 512" in message


def test_max_model_len_must_hold_the_longest_prompt_and_answer(verl_config):
    overrides = [*PAPER, "actor_rollout_ref.rollout.prompt_length=2560", "actor_rollout_ref.rollout.max_model_len=4096"]
    with pytest.raises(SKPOLengthError, match=r"reaches 5632 tokens .*actor_rollout_ref.rollout.max_model_len=4096"):
        check_lengths(config_with(verl_config, overrides))


def test_clamping_answers_to_a_short_context_is_allowed_when_asked_and_said(verl_config, caplog):
    # Qwen2.5-Math-7B: 4096 positions; the longest [s, q] (2560) leaves 4096 - 2560 = 1536 answer tokens.
    overrides = [
        *PAPER,
        "actor_rollout_ref.rollout.prompt_length=2560",
        "actor_rollout_ref.rollout.max_model_len=4096",
        "+algorithm.skpo.clamp_answers_to_context=true",
    ]
    with caplog.at_level("WARNING", logger="skpo_verl.rollout.lengths"):
        budget = check_lengths(config_with(verl_config, overrides))
    assert (budget.max_downstream_prompt, budget.max_sequence, budget.min_answer_length) == (2560, 4096, 1536)
    assert "answers after the longest [s, q] (2560 tokens) get 1536 of response_length 3072" in caplog.text

    # A context the longest [s, q] fills leaves no answer at all: refused even when clamping.
    with pytest.raises(SKPOLengthError, match=r"leaving no room for an answer within .*max_model_len=2560"):
        check_lengths(config_with(verl_config, [*overrides, "actor_rollout_ref.rollout.max_model_len=2560"]))


def test_null_max_model_len_falls_back_to_the_local_models_position_embeddings(verl_config, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    overrides = [*PAPER, "actor_rollout_ref.rollout.prompt_length=2560", f"actor_rollout_ref.model.path={tmp_path}"]
    with pytest.raises(SKPOLengthError, match=r"the model's max_position_embeddings"):
        check_lengths(config_with(verl_config, overrides))


def test_chat_format_keeps_slack_and_unconditional_needs_no_extra_prompt_room(verl_config):
    chat = [*PAPER, "actor_rollout_ref.rollout.prompt_length=2560", "+algorithm.skpo.skip_format=chat"]
    with pytest.raises(SKPOLengthError, match=r"2576 tokens .* \+ 16 chat-format slack"):
        check_lengths(config_with(verl_config, chat))
    unconditional = check_lengths(config_with(verl_config, [*PAPER, "+algorithm.skpo.conditioning=unconditional"]))
    assert unconditional.max_downstream_prompt == 1024


def test_a_hub_model_id_is_resolved_from_the_hugging_face_cache_without_download(verl_config, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from skpo_verl.rollout import lengths as agent_lengths

    snapshot = tmp_path / "models--org--tiny-math" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"text_config": {"max_position_embeddings": 4096}}))
    (tmp_path / "models--org--tiny-math" / "refs").mkdir()
    (tmp_path / "models--org--tiny-math" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    agent_lengths._model_json.cache_clear()

    config = config_with(verl_config, ["actor_rollout_ref.model.path=org/tiny-math"])
    assert agent_lengths.model_length_limit(config) == (
        4096,
        "the model's max_position_embeddings (actor_rollout_ref.rollout.max_model_len is null)",
    )
    assert agent_lengths.model_length_limit(config_with(verl_config, ["actor_rollout_ref.model.path=org/absent"])) == (
        None,
        "",
    )
    agent_lengths._model_json.cache_clear()
