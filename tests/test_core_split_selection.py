"""skpo_verl.core.split and skpo_verl.core.selection: the split point and the kept segment."""

import math

import numpy as np
import pytest

from skpo_verl.config import SKPOConfig
from skpo_verl.core.selection import mean_nll, select_extreme, select_median, select_segment, select_two_segments
from skpo_verl.core.split import cut_early_candidate, fixed_split_length, sample_split_length, split_bounds

LOW, HIGH = SKPOConfig().split_low, SKPOConfig().split_high  # 1/6, 1/2


def test_split_bounds_round_inward_at_the_initial_length():
    # 1024/6 = 170.67 -> ceil 171; 1024/2 = 512 -> 512
    assert split_bounds(1024.0, LOW, HIGH) == (171, 512)
    # 600/6 = 100, 600/2 = 300, both exact
    assert split_bounds(600.0, LOW, HIGH) == (100, 300)


def test_split_bounds_ignore_float_noise_at_integers():
    # 0.07*100 = 7.000000000000001 and 0.29*100 = 28.999999999999996 in float64; they mean 7 and 29
    assert split_bounds(100.0, 0.07, 0.29) == (7, 29)


@pytest.mark.parametrize(
    "mean_length, expected",
    [
        (0.0, (1, 1)),  # no tokens tracked: still at least one token
        (1.0, (1, 1)),  # [0.17, 0.5] -> ceil 1, floor 0 -> collapse to 1
        (3.0, (1, 1)),  # [0.5, 1.5] -> 1, 1
        (4.0, (1, 2)),  # [0.67, 2] -> 1, 2
    ],
)
def test_split_bounds_are_at_least_one_token_for_tiny_lengths(mean_length, expected):
    assert split_bounds(mean_length, LOW, HIGH) == expected


def test_split_bounds_collapse_to_lower_bound_when_no_integer_fits():
    # [0.3*7, 0.4*7] = [2.1, 2.8] holds no integer: ceil 3, floor 2 -> (3, 3)
    assert split_bounds(7.0, 0.3, 0.4) == (3, 3)


@pytest.mark.parametrize(
    "mean_length, low, high",
    [(-1.0, LOW, HIGH), (math.nan, LOW, HIGH), (math.inf, LOW, HIGH), (100.0, 0.0, 0.5), (100.0, 0.6, 0.5)],
)
def test_split_bounds_reject_invalid_arguments(mean_length, low, high):
    with pytest.raises(ValueError):
        split_bounds(mean_length, low, high)


def test_sample_split_length_covers_both_inclusive_bounds_and_nothing_else():
    rng = np.random.default_rng(0)
    # L = 4: bounds (1, 2)
    draws = {sample_split_length(4.0, LOW, HIGH, rng) for _ in range(200)}
    assert draws == {1, 2}
    # L = 12: bounds (2, 6)
    draws = {sample_split_length(12.0, LOW, HIGH, rng) for _ in range(500)}
    assert draws == {2, 3, 4, 5, 6}


def test_sample_split_length_is_at_least_one_for_tiny_lengths():
    rng = np.random.default_rng(0)
    assert {sample_split_length(0.5, LOW, HIGH, rng) for _ in range(20)} == {1}


def test_sample_split_length_returns_python_int_within_bounds():
    rng = np.random.default_rng(1)
    draws = [sample_split_length(1024.0, LOW, HIGH, rng) for _ in range(1000)]
    assert all(type(t) is int for t in draws)
    assert min(draws) >= 171 and max(draws) <= 512


def test_fixed_split_length_alternates_lower_and_upper_bound_by_step():
    # L = 1024: 171 on even steps, 512 on odd steps
    assert [fixed_split_length(1024.0, LOW, HIGH, step) for step in range(4)] == [171, 512, 171, 512]
    # tiny L: both ends are one token
    assert [fixed_split_length(1.0, LOW, HIGH, step) for step in range(2)] == [1, 1]


@pytest.mark.parametrize(
    "length, split_length, ended, kept",
    [
        (171, 171, False, 171),  # stopped at t_q
        (100, 171, False, 100),  # shorter without EOS (e.g. a length cap): keep all of it
        (300, 171, False, 171),  # longer: cut at t_q
        (100, 171, True, 50),  # early EOS: half its own length
        (101, 171, True, 50),  # floor(101/2)
        (171, 171, True, 85),  # EOS exactly at t_q also ended: floor(171/2)
        (1, 171, True, 1),  # at least one token
        (2, 171, True, 1),
        (200, 171, True, 171),  # EOS only after t_q: it did not end within t_q
    ],
)
def test_cut_early_candidate(length, split_length, ended, kept):
    assert cut_early_candidate(length, split_length, ended) == kept


@pytest.mark.parametrize("length, split_length", [(0, 171), (10, 0)])
def test_cut_early_candidate_rejects_empty_lengths(length, split_length):
    with pytest.raises(ValueError):
        cut_early_candidate(length, split_length, True)


def test_mean_nll_is_minus_the_mean_log_prob():
    # -(-0.5 - 1.5)/2 = 1.0
    assert mean_nll([-0.5, -1.5]) == 1.0
    assert mean_nll(np.array([-0.25])) == 0.25
    with pytest.raises(ValueError):
        mean_nll([])


def test_select_median_odd_group_picks_the_median_candidate():
    # median of {0.9, 0.1, 0.5, 0.7, 0.3} is 0.5 at index 2
    assert select_median([0.9, 0.1, 0.5, 0.7, 0.3]) == 2
    # with values off the median: median 2.0 (index 1 value 2.0) wins over 2.5 and 1.0
    assert select_median([10.0, 2.0, 2.5, 1.0, 0.0]) == 1


def test_select_median_even_group_picks_the_earlier_of_the_two_middle_candidates():
    # median = (2 + 3)/2 = 2.5; |d - 2.5| = [1.5, 1.5, 0.5, 0.5] -> tie of indices 2 and 3 -> 2 (value 3.0)
    assert select_median([4.0, 1.0, 3.0, 2.0]) == 2
    # same values, other order: tie of indices 2 (value 2.0) and 3 (value 3.0) -> 2: by position, not value
    assert select_median([1.0, 4.0, 2.0, 3.0]) == 2


def test_select_median_single_candidate():
    assert select_median([0.7]) == 0


def test_select_extreme_alternates_min_and_max_by_step():
    nlls = [0.3, 0.1, 0.9, 0.1, 0.9]
    # even steps: argmin, tie of indices 1 and 3 -> 1; odd steps: argmax, tie of 2 and 4 -> 2
    assert [select_extreme(nlls, step) for step in range(4)] == [1, 2, 1, 2]


def test_select_segment_dispatches_on_the_rule():
    nlls = [0.2, 0.5, 0.9]
    assert select_segment(nlls, "median", step=1) == 1
    assert select_segment(nlls, "extreme", step=0) == 0
    assert select_segment(nlls, "extreme", step=1) == 2
    with pytest.raises(ValueError, match="selection rule"):
        select_segment(nlls, "mean", step=0)


def test_two_segments_are_the_rules_choice_and_the_next_closest_to_the_median():
    # median 0.5 (index 2); |d - 0.5| = [0.4, 0.4, 0, 0.2, 0.2]: next closest 0.7 and 0.3 tie -> index 3
    assert select_two_segments([0.9, 0.1, 0.5, 0.7, 0.3], "median", step=0) == (2, 3)
    # even G: median (2 + 3)/2 = 2.5, the two middle candidates are equally close: both kept, index 2 first
    assert select_two_segments([4.0, 1.0, 3.0, 2.0], "median", step=0) == (2, 3)
    # all equal: the lowest index, then the next one
    assert select_two_segments([0.4, 0.4, 0.4], "median", step=0) == (0, 1)


def test_two_segments_with_extreme_selection_are_both_extremes():
    nlls = [0.3, 0.1, 0.9, 0.5]
    # even step: s_a the min (index 1), s_b the max (index 2); odd step the other way round
    assert select_two_segments(nlls, "extreme", step=0) == (1, 2)
    assert select_two_segments(nlls, "extreme", step=1) == (2, 1)
    # two candidates with the same NLL: still two different ones
    assert select_two_segments([0.2, 0.2], "extreme", step=0) == (0, 1)
    assert select_two_segments([0.2, 0.2], "extreme", step=1) == (0, 1)


def test_two_segments_need_two_candidates():
    with pytest.raises(ValueError, match="at least two candidates, got 1"):
        select_two_segments([0.7], "median", step=0)


@pytest.mark.parametrize("nlls", [[], [0.1, math.nan], [[0.1, 0.2]]])
def test_selection_rejects_empty_or_non_finite_nlls(nlls):
    with pytest.raises(ValueError):
        select_median(nlls)
    with pytest.raises(ValueError):
        select_extreme(nlls, 0)
