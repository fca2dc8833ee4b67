"""skpo_verl.core.advantages: downstream group advantages, upstream rewards and advantages."""

import math

import numpy as np
import pytest

from skpo_verl.core.advantages import (
    downstream_advantages,
    spatial_baselines,
    upstream_advantages,
    upstream_rewards,
)

EPS = 1e-6


def test_downstream_advantages_hand_case_and_all_equal_group():
    rewards = np.array([1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0])
    groups = np.array(["a"] * 4 + ["b"] * 4, dtype=object)
    # group a: mean -0.5, deviations [1.5, -0.5, -0.5, -0.5], sample var (2.25 + 3*0.25)/3 = 1 -> std 1
    # group b: all equal -> exactly 0
    expected = np.array([1.5, -0.5, -0.5, -0.5, 0.0, 0.0, 0.0, 0.0])
    expected[:4] /= 1.0 + EPS
    np.testing.assert_allclose(downstream_advantages(rewards, groups, EPS), expected, rtol=0, atol=1e-15)


def test_downstream_advantages_eps_enters_the_denominator():
    # group [1, -1]: mean 0, sample std sqrt(2) -> A = +-1/(sqrt(2) + 0.5)
    adv = downstream_advantages(np.array([1.0, -1.0]), np.array([0, 0]), 0.5)
    np.testing.assert_allclose(adv, [1 / (math.sqrt(2) + 0.5), -1 / (math.sqrt(2) + 0.5)], rtol=0, atol=1e-15)


def test_downstream_advantages_interleaved_groups_and_singleton():
    # g1 = rows 0, 2: [1, -1] -> +-1/(sqrt 2 + eps); g2 = rows 1, 3: [-1, -1] -> 0; g3 = row 4 alone -> 0
    rewards = np.array([1.0, -1.0, -1.0, -1.0, 1.0])
    groups = np.array(["g1", "g2", "g1", "g2", "g3"], dtype=object)
    a = 1 / (math.sqrt(2) + EPS)
    np.testing.assert_allclose(downstream_advantages(rewards, groups, EPS), [a, 0, -a, 0, 0], rtol=0, atol=1e-15)


def test_downstream_advantages_constant_fractional_group_is_exactly_zero():
    # 0.1 is not exact in binary; the group mean may differ from 0.1 by an ulp, the advantage must not
    adv = downstream_advantages(np.full(7, 0.1), np.zeros(7, dtype=np.int64), EPS)
    assert np.all(adv == 0.0)


def test_downstream_advantages_groups_compare_by_value_not_by_type():
    # 1 and "1" are different uids
    adv = downstream_advantages(np.array([1.0, -1.0]), np.array([1, "1"], dtype=object), EPS)
    np.testing.assert_array_equal(adv, [0.0, 0.0])


def test_downstream_advantages_empty_batch():
    assert downstream_advantages(np.array([]), np.array([], dtype=object), EPS).shape == (0,)


def test_downstream_advantages_reject_malformed_input():
    with pytest.raises(ValueError):
        downstream_advantages(np.array([1.0, 0.0]), np.array([0]), EPS)
    with pytest.raises(ValueError):
        downstream_advantages(np.array([1.0, math.nan]), np.array([0, 0]), EPS)


def _rows():
    # group a: rewards [1, -1, 1, 1] with sessions [1, 2, 0, 3]; group b: rewards [1, -1] with sessions [1, 0]
    rewards = np.array([1.0, -1.0, 1.0, 1.0, 1.0, -1.0])
    groups = np.array(["a", "a", "a", "a", "b", "b"], dtype=object)
    sessions = np.array([1, 2, 0, 3, 1, 0])
    return rewards, groups, sessions


def test_upstream_rewards_mc_mean_is_the_mean_of_the_groups_answers():
    rewards, groups, sessions = _rows()
    # b: (1 - 1)/2 = 0; a: (1 - 1 + 1 + 1)/4 = 0.5 (upstream rows in any order)
    out = upstream_rewards(rewards, groups, np.array(["b", "a"], dtype=object), "mc_mean", sessions)
    np.testing.assert_array_equal(out, [0.0, 0.5])


def test_upstream_rewards_first_answer_is_the_session_zero_answer():
    rewards, groups, sessions = _rows()
    # b: session 0 is row 5, reward -1; a: session 0 is row 2, reward 1
    out = upstream_rewards(rewards, groups, np.array(["b", "a"], dtype=object), "first_answer", sessions)
    np.testing.assert_array_equal(out, [-1.0, 1.0])


def test_upstream_rewards_first_answer_is_the_answer_of_the_session_that_returned_the_upstream_row():
    # The spatial baseline's second segment: its upstream row comes from session 2 of a G = 4 prompt,
    # and its answers are sessions 2 and 3. Groups: a (sessions 0, 1) rewards [1, -1]; b (2, 3) [-1, 1].
    rewards = np.array([1.0, -1.0, -1.0, 1.0])
    groups = np.array(["a", "a", "b", "b"], dtype=object)
    sessions = np.array([0, 1, 2, 3])
    up = np.array(["a", "b"], dtype=object)
    out = upstream_rewards(rewards, groups, up, "first_answer", sessions, sessions_up=np.array([0, 2]))
    np.testing.assert_array_equal(out, [1.0, -1.0])
    with pytest.raises(ValueError, match="'b' has 0 downstream rows with session 0"):
        upstream_rewards(rewards, groups, up, "first_answer", sessions)


def test_upstream_rewards_own_completion_is_each_upstream_rows_completion_reward():
    rewards, groups, _sessions = _rows()
    # "w/o MC": R_I is the kept candidate's own completion, whatever its group's answers scored
    out = upstream_rewards(
        rewards, groups, np.array(["b", "a"], dtype=object), "own_completion", completion_rewards=np.array([1.0, -1.0])
    )
    np.testing.assert_array_equal(out, [1.0, -1.0])
    with pytest.raises(ValueError, match="one completion reward per upstream row"):
        upstream_rewards(rewards, groups, np.array(["b", "a"], dtype=object), "own_completion")


def test_upstream_rewards_reject_a_group_without_downstream_rows():
    rewards, groups, sessions = _rows()
    with pytest.raises(ValueError, match="'c' has no downstream rows"):
        upstream_rewards(rewards, groups, np.array(["a", "c"], dtype=object), "mc_mean", sessions)


def test_upstream_rewards_first_answer_needs_exactly_one_session_zero():
    rewards, groups, sessions = _rows()
    with pytest.raises(ValueError, match="one session number per downstream reward"):
        upstream_rewards(rewards, groups, np.array(["a"], dtype=object), "first_answer")
    sessions[0] = 0  # group a now has two session-0 answers
    with pytest.raises(ValueError, match="2 downstream rows with session 0"):
        upstream_rewards(rewards, groups, np.array(["a"], dtype=object), "first_answer", sessions)


def test_upstream_rewards_reject_unknown_mode():
    rewards, groups, sessions = _rows()
    with pytest.raises(ValueError, match="mc_mean"):
        upstream_rewards(rewards, groups, np.array(["a"], dtype=object), "mean", sessions)


def test_upstream_advantages_hand_case():
    rewards = np.array([0.5, -0.25, 1.0])
    baselines = np.array([0.0, 0.25, 0.0])
    # A = [0.5, -0.5, 1.0], mean 1/3, centred [1/6, -5/6, 2/3]
    # sample var = (1/36 + 25/36 + 16/36)/2 = 7/12 -> std = sqrt(7/12) = 0.76376...
    std = math.sqrt(7 / 12)
    expected = np.array([1 / 6, -5 / 6, 2 / 3]) / (std + EPS)
    np.testing.assert_allclose(upstream_advantages(rewards, baselines, EPS), expected, rtol=0, atol=1e-14)


def test_upstream_advantages_single_row_is_zero():
    # one row: A - mean_B A = 0 (and its ddof=1 std is undefined)
    np.testing.assert_array_equal(upstream_advantages(np.array([1.0]), np.array([-0.5]), EPS), [0.0])


def test_upstream_advantages_equal_raw_advantages_are_zero():
    # A = [0.5 - 0.25, 0 - (-0.25)] = [0.25, 0.25]
    np.testing.assert_array_equal(upstream_advantages(np.array([0.5, 0.0]), np.array([0.25, -0.25]), EPS), [0, 0])


def test_upstream_advantages_empty_and_malformed():
    assert upstream_advantages(np.array([]), np.array([]), EPS).shape == (0,)
    with pytest.raises(ValueError):
        upstream_advantages(np.array([0.5, 0.0]), np.array([0.0]), EPS)
    with pytest.raises(ValueError):
        upstream_advantages(np.array([math.inf]), np.array([0.0]), EPS)


def test_downstream_batch_norm_divides_group_centred_rewards_by_one_batch_std():
    # group a: [1, -1] -> centred [1, -1]; group b: [1, 1, 1] -> constant, centred [0, 0, 0]
    rewards = np.array([1.0, -1.0, 1.0, 1.0, 1.0])
    groups = np.array(["a", "a", "b", "b", "b"], dtype=object)
    # batch std (ddof=1) of [1, -1, 0, 0, 0] = sqrt(2 / 4) = 0.7071...
    out = downstream_advantages(rewards, groups, eps=0.0, norm="batch")
    np.testing.assert_allclose(out, [2**0.5, -(2**0.5), 0.0, 0.0, 0.0])
    # per group (Eq. 5): group a's own std is sqrt(2), so +-1/sqrt(2)
    np.testing.assert_allclose(downstream_advantages(rewards, groups, eps=0.0), [2**-0.5, -(2**-0.5), 0, 0, 0])
    with pytest.raises(ValueError, match="'group' or 'batch'"):
        downstream_advantages(rewards, groups, eps=0.0, norm="global")


def test_upstream_advantages_excluding_zeroes_excluded_rows_and_normalises_over_the_rest():
    from skpo_verl.core.advantages import upstream_advantages_excluding

    rewards = np.array([1.0, 0.5, -1.0, 0.0])
    baselines = np.array([0.0, 0.5, 0.0, -0.5])
    # Kept rows 0, 2, 3: raw A = 1, -1, 0.5; mean 1/6; deviations 5/6, -7/6, 1/3;
    # sample std sqrt((25/36 + 49/36 + 4/36) / 2) = sqrt(78/72) = 1.040833.
    out = upstream_advantages_excluding(rewards, baselines, np.array([False, True, False, False]), 1e-6)
    np.testing.assert_allclose(out, [0.800641, 0.0, -1.120897, 0.320256], atol=1e-5)
    # Nothing excluded: exactly the paper's advantage.
    np.testing.assert_array_equal(
        upstream_advantages_excluding(rewards, baselines, np.zeros(4, dtype=bool), 1e-6),
        upstream_advantages(rewards, baselines, 1e-6),
    )
    # One row left: 0 (a single row has no spread); all excluded: all 0.
    np.testing.assert_array_equal(
        upstream_advantages_excluding(rewards, baselines, np.array([True, True, False, True]), 1e-6), np.zeros(4)
    )
    np.testing.assert_array_equal(
        upstream_advantages_excluding(rewards, baselines, np.ones(4, bool), 1e-6), np.zeros(4)
    )
    with pytest.raises(ValueError, match="shape"):
        upstream_advantages_excluding(rewards, baselines, np.zeros(3, dtype=bool), 1e-6)


def test_upstream_advantages_rms_scales_without_centring_so_each_row_keeps_its_sign():
    from skpo_verl.core.advantages import upstream_advantages_rms

    # First visits (V_prev = 0) of a batch where most answers are right: R_I = 1, 1, 0.75, -0.5.
    rewards = np.array([1.0, 1.0, 0.75, -0.5])
    baselines = np.zeros(4)
    # rms = sqrt((1 + 1 + 0.5625 + 0.25) / 4) = sqrt(0.703125) = 0.838525
    out = upstream_advantages_rms(rewards, baselines, 1e-6)
    np.testing.assert_allclose(out, [1.192570, 1.192570, 0.894427, -0.596285], atol=1e-5)
    assert (out[:3] > 0).all() and out[3] < 0
    # A batch of mostly right segments, R_I = 1, 1, 1, 0.75: the paper's centred advantage pushes the
    # 0.75 one down (mean 0.9375); rms keeps it positive (rms = sqrt(3.5625 / 4) = 0.943729).
    mostly_right = np.array([1.0, 1.0, 1.0, 0.75])
    assert upstream_advantages(mostly_right, np.zeros(4), 1e-6)[3] < 0
    np.testing.assert_allclose(
        upstream_advantages_rms(mostly_right, np.zeros(4), 1e-6), [1.059626, 1.059626, 1.059626, 0.794719], atol=1e-5
    )
    # Every row equal: |A| = 1 (the paper's normalisation gives 0 there); all zero: 0.
    np.testing.assert_allclose(upstream_advantages_rms(np.ones(3), np.zeros(3), 1e-6), np.ones(3), atol=1e-5)
    np.testing.assert_array_equal(upstream_advantages_rms(np.ones(3), np.ones(3), 1e-6), np.zeros(3))
    # With the first-visit exclusion: only the kept rows set the scale.
    from skpo_verl.core.advantages import upstream_advantages_excluding

    excluded = np.array([True, False, False, True])
    # kept a = 1, 0.75: rms = sqrt((1 + 0.5625) / 2) = 0.883883
    np.testing.assert_allclose(
        upstream_advantages_excluding(rewards, baselines, excluded, 1e-6, upstream_advantages_rms),
        [0.0, 1.131371, 0.848528, 0.0],
        atol=1e-5,
    )


def test_spatial_baselines_are_the_mean_r_i_of_each_prompts_two_segments():
    # Prompt p: R_I(s_a) = 0.5, R_I(s_b) = -0.5 -> b = 0, a = +-0.5 = +-(0.5 - (-0.5)) / 2.
    # Prompt q: 1 and 1 (a tie) -> b = 1, a = 0. Prompt r: -1, 0 (rows not adjacent) -> b = -0.5, a = -0.5, +0.5.
    rewards = np.array([0.5, -0.5, 1.0, -1.0, 1.0, 0.0])
    prompts = np.array(["p", "p", "q", "r", "q", "r"], dtype=object)
    baselines = spatial_baselines(rewards, prompts)
    np.testing.assert_array_equal(baselines, [0.0, 0.0, 1.0, -0.5, 1.0, -0.5])
    np.testing.assert_array_equal(rewards - baselines, [0.5, -0.5, 0.0, -0.5, 0.0, 0.5])
    # Then the paper's batch normalisation of a: mean 0, sample std sqrt(4 x 0.25 / 5) = sqrt(0.2) = 0.447214.
    np.testing.assert_allclose(
        upstream_advantages(rewards, baselines, EPS), np.array([1, -1, 0, -1, 0, 1]) * 0.5 / (0.2**0.5 + EPS)
    )
    with pytest.raises(ValueError, match="2 upstream rewards but 1 prompt labels"):
        spatial_baselines(np.array([0.0, 1.0]), np.array(["p"], dtype=object))
