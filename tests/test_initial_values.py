"""SPO's offline warm start: the values file, the seeded trackers, start-up checks, checkpoint and resume."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from test_prioritized_sampling import _create_rl_sampler, _Dataset

from skpo_verl.config import SKPOConfig
from skpo_verl.core.tracker import tracker_to_reward
from skpo_verl.training.initial_values import InitialValuesError, read_initial_values, write_initial_values
from skpo_verl.training.state import SKPOState


def _values_file(tmp_path, rates, n0=8, name="values.json"):
    path = str(tmp_path / name)
    write_initial_values(path, rates, dict.fromkeys(rates, n0), n0, decoded_tokens=123, source={"model": "m"})
    return path


def _state(path, **tracker):
    return SKPOState(SKPOConfig.from_mapping({"tracker": {"initial_values": path, **tracker}}))


def test_a_values_file_seeds_each_prompts_tracker_with_its_value_and_n0_observations(tmp_path):
    path = _values_file(tmp_path, {0: 0.625, 1: 0.0, "p-2": 1.0})
    state = _state(path)
    # rho_min = 0.875: N0 = 1 / (1 - 0.875) = 8 observations, at step 0.
    assert state.values.value(0) == 0.625 and state.values.count(0) == 8.0
    assert state.values.value(1) == 0.0 and state.values.value("p-2") == 1.0
    assert state.values.last_seen(1) == 0
    assert 0 in state.values and "0" not in state.values  # keys keep their types
    assert state.values.value(7) == 0.5  # an unlisted prompt reads the initial value (0 in reward space)
    # rho_min = 0.75: N0 = 4.
    assert _state(path, rho_min=0.75).values.count(0) == 4.0
    assert state.initial_values.n0 == 8 and state.initial_values.decoded_tokens == 123


def test_a_seeded_prompts_first_visit_is_judged_against_its_value_and_forgets_it_by_the_steps_since_step_0(tmp_path):
    state = _state(_values_file(tmp_path, {0: 0.75}))
    assert tracker_to_reward(state.values.value(0)) == 0.5  # V_prev for its first upstream advantage
    # First visit at step 1: D = 1 step since step 0, rho = 2^(-1/8) = 0.917004.
    rho = state.forgetting(0, step=1)
    assert rho == pytest.approx(2 ** (-1 / 8))
    # S = 0.917004 x 6 + 0 = 5.502025, N = 0.917004 x 8 + 1 = 8.336034 -> V = 0.660029 (R_I = -1 observed).
    assert state.values.update(0, 0.0, rho, 1) == pytest.approx(0.660029, abs=1e-6)
    # At step 5 (D = 5): 2^(-5/8) = 0.648 is clipped to rho_min.
    assert _state(_values_file(tmp_path, {0: 0.75}, name="b.json")).forgetting(0, step=5) == 0.875


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        ("not json", "not readable JSON"),
        (json.dumps({"format": "other"}), "format 'other'"),
        (json.dumps({"format": "skpo-initial-values", "version": 2}), "version 2"),
        (json.dumps({"format": "skpo-initial-values", "version": 1, "space": "reward"}), "space 'reward'"),
    ],
)
def test_an_unknown_or_missing_file_fails_naming_the_key(tmp_path, content, message):
    path = tmp_path / "values.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InitialValuesError, match=message) as error:
        _state(str(path))
    assert str(error.value).startswith(f"algorithm.skpo.tracker.initial_values={path}")


def test_values_outside_zero_one_and_repeated_prompts_fail_naming_the_prompt(tmp_path):
    path = _values_file(tmp_path, {0: 0.5, 3: 0.5})
    document = json.loads(Path(path).read_text())
    document["prompts"][1]["success_rate"] = -0.5  # a reward, not a success rate
    Path(path).write_text(json.dumps(document))
    with pytest.raises(InitialValuesError, match=r"prompt index 3 has success_rate -0.5, .* \[0, 1\] \(a reward"):
        read_initial_values(path)
    document["prompts"][1] = {"index": 0, "success_rate": 0.5, "samples": 8}
    Path(path).write_text(json.dumps(document))
    with pytest.raises(InitialValuesError, match="prompt index 0 is listed twice"):
        read_initial_values(path)


def test_rho_min_one_is_refused_with_initial_values():
    with pytest.raises(ValueError, match="initial_values needs tracker.rho_min < 1"):
        SKPOConfig.from_mapping({"tracker": {"initial_values": "v.json", "rho_min": 1.0, "rho_max": 1.0}})


def test_the_training_set_must_be_covered_when_verl_hands_over_the_dataset(tmp_path, caplog):
    path = _values_file(tmp_path, {3: 0.5, 4: 1.0, 9: 1.0})
    sampler, _ = _create_rl_sampler({"tracker": {"initial_values": path}}, _Dataset([3, 4]))
    # Prioritized sampling reads the seeded values from the first draw: w = sqrt(V(1 - V)) + 0.05 = 0.55 and
    # 0.05, so P(index 3) = 0.55 / 0.60 = 0.9167 (0.5 with unseeded trackers).
    draws = [position for _ in range(2000) for position in sampler]
    assert draws.count(0) / 4000 == pytest.approx(0.55 / 0.60, abs=0.02)
    assert "1 of its prompts are not in the training set" in caplog.text
    with pytest.raises(
        InitialValuesError, match=r"no value for 2 of the 4 training prompts \(extra_info.index \[5, 6\]"
    ):
        _create_rl_sampler({"tracker": {"initial_values": path}}, _Dataset([3, 4, 5, 6]))


def test_start_up_validation_reports_a_bad_values_file(tmp_path):
    from skpo_verl.validation import SKPOConfigError, validate_config
    from skpo_verl.verl_config import compose_ppo_config

    overrides = [
        "algorithm.adv_estimator=skpo",
        "actor_rollout_ref.actor.policy_loss.loss_mode=skpo",
        "actor_rollout_ref.rollout.agent.default_agent_loop=skpo_agent",
        "actor_rollout_ref.rollout.n=4",
        "+algorithm.skpo.tracker.initial_length=32",
        "data.max_response_length=32",
        "data.max_prompt_length=32",
        "actor_rollout_ref.rollout.prompt_length=48",
        "actor_rollout_ref.rollout.max_model_len=256",
        f"+algorithm.skpo.tracker.initial_values={tmp_path / 'absent.json'}",
    ]
    with pytest.raises(SKPOConfigError, match=r"tracker.initial_values=.*absent.json: no such file"):
        validate_config(compose_ppo_config(overrides))


RELOAD = """
import pickle, sys
from skpo_verl.config import SKPOConfig
from skpo_verl.training.state import SKPOState
state = SKPOState(SKPOConfig())   # resumed without the file: the checkpoint alone restores the values
state.load(sys.argv[1])
pickle.dump(state.state_dict(), open(sys.argv[2], "wb"))
"""


def test_checkpoint_and_resume_keep_the_loaded_values_as_they_evolved(tmp_path):
    path = _values_file(tmp_path, {0: 0.75, 1: 0.25})
    state = _state(path)
    state.values.update(0, 1.0, state.forgetting(0, step=3), 3)  # prompt 0 visited at step 3; prompt 1 never
    state.save(str(tmp_path / "global_step_3"))
    out = tmp_path / "reloaded.pkl"
    subprocess.run([sys.executable, "-c", RELOAD, str(tmp_path / "global_step_3"), str(out)], check=True, timeout=120)
    reloaded = pickle.loads(out.read_bytes())
    assert reloaded["values"] == state.state_dict()["values"]
    values = dict(zip(reloaded["values"]["keys"], zip(reloaded["values"]["sums"], reloaded["values"]["counts"])))
    assert values[1] == (0.25 * 8, 8.0)  # still the loaded value, never visited
    # Prompt 0: rho = 0.875 (D = 3 steps): S = 0.875 x 6 + 1 = 6.25, N = 0.875 x 8 + 1 = 8.
    assert values[0] == pytest.approx((6.25, 8.0))
    # Resuming a run that loads the file: the checkpoint wins over the file, even if the file changed.
    _values_file(tmp_path, {0: 0.0, 1: 0.0})
    resumed = _state(path)
    resumed.load(str(tmp_path / "global_step_3"))
    assert resumed.values.value(0) == pytest.approx(6.25 / 8) and resumed.values.value(1) == 0.25
