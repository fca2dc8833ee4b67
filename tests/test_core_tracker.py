"""skpo_verl.core.tracker: forgetting factor, reward mapping, Beta/EMA value tracker, length tracker."""

import json
import math
import pickle

import numpy as np
import pytest

from skpo_verl.config import TrackerConfig
from skpo_verl.core.tracker import (
    BetaTracker,
    LengthTracker,
    ema_update,
    forgetting_factor,
    prior_count,
    reward_to_tracker,
    tracker_to_reward,
)

CFG = TrackerConfig()  # rho in [0.875, 0.96], half-life 8 steps


def test_forgetting_factor_inside_bounds_is_two_to_minus_d_over_half_life():
    # 2^(-1/8) = 0.917004043204671..., inside [0.875, 0.96]
    rho = forgetting_factor(1.0, CFG.half_life_steps, CFG.rho_min, CFG.rho_max)
    assert rho == pytest.approx(0.9170040432046712, abs=1e-15)


def test_forgetting_factor_clips_at_both_bounds():
    # D = 0: 2^0 = 1 -> rho_max; D = 8: 2^-1 = 0.5 -> rho_min; D = inf: 0 -> rho_min
    assert forgetting_factor(0.0, 8.0, 0.875, 0.96) == 0.96
    assert forgetting_factor(8.0, 8.0, 0.875, 0.96) == 0.875
    assert forgetting_factor(math.inf, 8.0, 0.875, 0.96) == 0.875


@pytest.mark.parametrize(
    "divergence, half_life, rho_min, rho_max",
    [(-1.0, 8.0, 0.875, 0.96), (math.nan, 8.0, 0.875, 0.96), (1.0, 0.0, 0.875, 0.96), (1.0, 8.0, 0.97, 0.96)],
)
def test_forgetting_factor_rejects_invalid_arguments(divergence, half_life, rho_min, rho_max):
    with pytest.raises(ValueError):
        forgetting_factor(divergence, half_life, rho_min, rho_max)


def test_reward_tracker_maps_are_affine_inverses_on_floats_and_arrays():
    # (r + 1) / 2: -1 -> 0, 0 -> 0.5, 1 -> 1, 0.5 -> 0.75
    assert reward_to_tracker(-1.0) == 0.0
    assert reward_to_tracker(CFG.initial_value) == 0.5
    np.testing.assert_array_equal(reward_to_tracker(np.array([-1.0, 0.0, 0.5, 1.0])), [0.0, 0.5, 0.75, 1.0])
    # 2 v - 1: 0.75 -> 0.5
    assert tracker_to_reward(0.75) == 0.5
    np.testing.assert_array_equal(tracker_to_reward(np.array([0.0, 0.5, 1.0])), [-1.0, 0.0, 1.0])


def test_unseen_prompt_reads_initial_value_and_has_no_state():
    tracker = BetaTracker(initial_value=0.5)
    assert tracker.value("q") == 0.5
    assert tracker.count("q") == 0.0
    assert tracker.last_seen("q") is None
    assert "q" not in tracker and len(tracker) == 0
    np.testing.assert_array_equal(tracker.values(["q", "r"]), [0.5, 0.5])


def test_beta_tracker_first_observation_overwrites_then_discounts():
    tracker = BetaTracker(initial_value=0.5)
    # zero prior counts: alpha = rho*0 + 1, beta = rho*0 + 0 -> V = 1 whatever rho
    assert tracker.update("q", 1.0, rho=0.9, step=3) == 1.0
    assert tracker.count("q") == 1.0 and tracker.last_seen("q") == 3 and "q" in tracker
    # alpha = 0.5*1 + 0 = 0.5, beta = 0.5*0 + 1 = 1 -> V = 0.5/1.5 = 1/3
    assert tracker.update("q", 0.0, rho=0.5, step=5) == pytest.approx(1.0 / 3.0, abs=1e-15)
    assert tracker.count("q") == 1.5
    # alpha = 0.875*0.5 + 1 = 1.4375, beta = 0.875*1 + 0 = 0.875 -> V = 1.4375/2.3125 = 23/37
    assert tracker.update("q", 1.0, rho=0.875, step=9) == pytest.approx(23.0 / 37.0, abs=1e-15)
    assert tracker.count("q") == 2.3125
    assert tracker.value("q") == pytest.approx(23.0 / 37.0, abs=1e-15)
    assert tracker.last_seen("q") == 9 and len(tracker) == 1


def test_ema_update_hand_case():
    # eta = 1/(0.5*2 + 1) = 0.5: V = 0.25 + 0.5*(1 - 0.25) = 0.625, N = 0.5*2 + 1 = 2
    assert ema_update(0.25, 2.0, 1.0, 0.5) == (0.625, 2.0)
    # N = 0: eta = 1, the observation overwrites the initial value
    assert ema_update(0.5, 0.0, 0.2, 0.9) == (0.2, 1.0)


def test_beta_form_and_ema_form_agree_on_a_random_stream():
    rng = np.random.default_rng(2604)
    tracker = BetaTracker(initial_value=0.5)
    value, count = 0.5, 0.0
    for step in range(2000):
        # binary outcomes and MC means of 8 answers, as the upstream reward produces
        reward = float(rng.integers(0, 2)) if step % 2 else rng.integers(0, 9) / 8.0
        rho = float(rng.uniform(CFG.rho_min, CFG.rho_max))
        beta_value = tracker.update("q", reward, rho, step)
        value, count = ema_update(value, count, reward, rho)
        assert abs(beta_value - value) < 1e-9
        assert abs(tracker.count("q") - count) < 1e-9


def test_beta_tracker_rejects_out_of_range_inputs():
    with pytest.raises(ValueError):
        BetaTracker(initial_value=1.5)
    tracker = BetaTracker(initial_value=0.5)
    with pytest.raises(ValueError, match="reward_to_tracker"):
        tracker.update("q", -1.0, rho=0.9, step=0)  # a reward-space value
    for rho in (0.0, 1.01):
        with pytest.raises(ValueError):
            tracker.update("q", 0.5, rho=rho, step=0)
    assert "q" not in tracker  # failed updates leave no state


def test_numpy_scalar_keys_are_the_same_prompt_and_saved_as_python_ints():
    tracker = BetaTracker(initial_value=0.5)
    tracker.update(np.int64(7), 1.0, rho=0.9, step=0)
    assert 7 in tracker and tracker.value(7) == 1.0
    assert type(tracker.state_dict()["keys"][0]) is int


def test_state_dict_round_trip_is_bit_exact_and_keeps_key_types():
    rng = np.random.default_rng(0)
    tracker = BetaTracker(initial_value=0.5)
    keys = [3, "3", 17, "prompt-a"]
    for step in range(50):
        tracker.update(keys[step % 4], float(rng.random()), float(rng.uniform(0.875, 0.96)), step)
    state = tracker.state_dict()
    restored_trackers = []
    for restored_state in (pickle.loads(pickle.dumps(state)), json.loads(json.dumps(state))):
        restored = BetaTracker(initial_value=0.5)
        restored.load_state_dict(restored_state)
        assert len(restored) == 4
        for key in keys:
            assert restored.value(key) == tracker.value(key)  # bit-exact, not approx
            assert restored.count(key) == tracker.count(key)
            assert restored.last_seen(key) == tracker.last_seen(key)
        assert 3 in restored and "3" in restored and restored.value(3) != restored.value("3")
        restored_trackers.append(restored)
    # and the restored trackers continue exactly as the original
    expected = tracker.update(17, 0.3, 0.9, 50)
    assert [restored.update(17, 0.3, 0.9, 50) for restored in restored_trackers] == [expected, expected]


def test_load_state_dict_rejects_the_other_trackers_state():
    lengths = LengthTracker(initial_length=1024.0)
    lengths.update("q", 300.0, rho=0.9, step=0)
    with pytest.raises(ValueError, match="LengthTracker"):
        BetaTracker(initial_value=0.5).load_state_dict(lengths.state_dict())


def test_load_state_dict_replaces_existing_state():
    tracker = BetaTracker(initial_value=0.5)
    tracker.update("old", 1.0, rho=0.9, step=0)
    tracker.load_state_dict(BetaTracker(initial_value=0.5).state_dict())
    assert len(tracker) == 0 and tracker.value("old") == 0.5


def test_length_tracker_starts_at_initial_length_then_tracks_the_discounted_mean():
    tracker = LengthTracker(initial_length=CFG.initial_length)
    assert tracker.value("q") == 1024.0
    assert tracker.update("q", 300.0, rho=0.96, step=1) == 300.0  # first observation overwrites
    # S = 0.5*300 + 500 = 650, N = 0.5*1 + 1 = 1.5 -> L = 433.33...
    assert tracker.update("q", 500.0, rho=0.5, step=2) == pytest.approx(650.0 / 1.5, abs=1e-12)
    assert tracker.count("q") == 1.5 and tracker.last_seen("q") == 2
    restored = LengthTracker(initial_length=1024.0)
    restored.load_state_dict(tracker.state_dict())
    assert restored.value("q") == tracker.value("q")


def test_length_tracker_rejects_negative_lengths_and_bad_initial_length():
    with pytest.raises(ValueError):
        LengthTracker(initial_length=0.0)
    with pytest.raises(ValueError):
        LengthTracker(initial_length=1024.0).update("q", -1.0, rho=0.9, step=0)


def test_version_counts_changes():
    tracker = BetaTracker(initial_value=0.5)
    before = tracker.version
    tracker.update("q", 1.0, rho=0.9, step=0)
    assert tracker.version == before + 1
    tracker.load_state_dict(tracker.state_dict())
    assert tracker.version == before + 2


def test_logprob_divergence_is_the_token_mean_absolute_change():
    from skpo_verl.core.tracker import logprob_divergence

    # |(-1.0) - (-1.2)| = 0.2, |(-0.5) - (-0.5)| = 0, |(-2.0) - (-1.9)| = 0.1 -> mean 0.1
    assert logprob_divergence([-1.0, -0.5, -2.0], [-1.2, -0.5, -1.9]) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        logprob_divergence([], [])
    with pytest.raises(ValueError):
        logprob_divergence([-1.0], [-1.0, -2.0])


def test_spo_half_life_turns_a_logprob_change_into_rho():
    # SPO: D_half = 0.06. D = 0.03 -> 2^-0.5 = 0.7071 -> clipped to rho_min 0.875;
    # D = 0.003 -> 2^-0.05 = 0.96594 -> clipped to rho_max 0.96; D = 0.01 -> 2^(-1/6) = 0.89090.
    assert forgetting_factor(0.03, 0.06, 0.875, 0.96) == 0.875
    assert forgetting_factor(0.003, 0.06, 0.875, 0.96) == 0.96
    assert forgetting_factor(0.01, 0.06, 0.875, 0.96) == pytest.approx(2 ** (-1 / 6))


def test_prior_count_is_one_over_one_minus_rho_min():
    assert prior_count(0.875) == 8.0  # the paper's rho_min: an estimate weighs as 8 observations
    assert prior_count(0.5) == 2.0
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="rho_min"):
            prior_count(bad)


def test_a_seeded_value_is_n0_prior_observations_that_later_updates_discount():
    tracker = BetaTracker(initial_value=0.5)
    tracker.seed("q", 0.25, count=8.0, step=0)
    assert tracker.value("q") == 0.25 and tracker.count("q") == 8.0 and tracker.last_seen("q") == 0
    assert "q" in tracker and len(tracker) == 1
    # alpha = 0.875 * (0.25 * 8) + 1 = 2.75, N = 0.875 * 8 + 1 = 8 -> V = 2.75 / 8 = 0.34375
    # (EMA form: eta = 1 / 8, V = 0.25 + (1 - 0.25) / 8).
    assert tracker.update("q", 1.0, rho=0.875, step=3) == pytest.approx(0.34375, abs=1e-15)
    assert tracker.count("q") == 8.0
    with pytest.raises(ValueError, match="already has observations"):
        tracker.seed("q", 0.5, count=8.0, step=0)
    with pytest.raises(ValueError, match="must lie in"):
        tracker.seed("r", 1.5, count=8.0, step=0)
    with pytest.raises(ValueError, match="count"):
        tracker.seed("r", 0.5, count=0.0, step=0)
    # A seeded tracker saves and loads like any other.
    again = BetaTracker(initial_value=0.5)
    again.load_state_dict(tracker.state_dict())
    assert again.value("q") == tracker.value("q") and again.count("q") == 8.0
