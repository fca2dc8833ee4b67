"""The upstream diagnostics (docs/algorithm.md, "Why SKPO loses on the CPU tasks"): the chain-sum tasks'
segment judge, the oracle and random upstream signals, the sign-agreement metric, their refusals.

Batches are hand-built as in test_estimator.py; every number is worked out by hand.
"""

import numpy as np
import pytest
from test_estimator import _batch
from test_validation import SKPO

from skpo_verl.config import SKPOConfig
from skpo_verl.core.advantages import upstream_advantages
from skpo_verl.core.tracker import tracker_to_reward
from skpo_verl.demo.task import segment_is_clean
from skpo_verl.training.estimator import compute_skpo_advantage
from skpo_verl.training.segment_judge import diagnostic_signal, load_segment_judge
from skpo_verl.training.state import SKPOState
from skpo_verl.validation import SKPOConfigError, validate_config
from skpo_verl.verl_config import compose_ppo_config

JUDGE = "skpo_verl.demo.task:segment_is_clean"
PROBLEM = "<|im_start|>user\nAdd 8, 5, 9, 7, 3.<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(
    "segment, clean",
    [
        ("", True),  # no completed step: nothing wrong yet
        ("8+5=1", True),  # an unfinished step is not judged (it may become 13)
        ("8+5=13. 13+9=2", True),
        ("8+5=13. 13+9=22.", True),
        ("8+5=14.", False),  # the careless solver's slip, one too high
        ("8+5=14. 14+9=23. 2", False),  # a slip carried through is still a slip
        ("8+5=13. 13+9=23.", False),  # the second step slips
        ("8+6=14.", False),  # a wrong operand, however right the sum
        ("Answer: 32.", False),  # not a sequence of steps
        ("8+5=13. 13+9=22. 22+7=29. 29+3=32.\nAnswer: 32", True),  # a whole right solution
    ],
)
def test_the_chain_sum_judge_checks_every_completed_step_against_the_true_partial_sums(segment, clean):
    assert segment_is_clean(PROBLEM, segment) is clean


def test_the_chain_sum_judge_refuses_a_prompt_without_a_chain_sum_problem():
    with pytest.raises(ValueError, match="Unset algorithm.skpo.segment_judge for other tasks"):
        segment_is_clean("What is 2 + 3?", "2+3=5.")


def _advantages(config, groups, judged, state=None, step=1):
    state = state or SKPOState(config)
    token_rewards, mask, rows = _batch(groups)
    metrics = {}
    advantages, _ = compute_skpo_advantage(
        token_rewards, mask, skpo_rows=rows, skpo_state=state, global_step=step, metrics=metrics, judged_clean=judged
    )
    return advantages[:, 0].numpy()[rows.is_upstream], metrics, state


# Four first visits with R_I = 1, 1, -1, -0.5; the judge calls segments 1 and 3 clean.
GROUPS = [("a", 1, 0.0, [1, 1]), ("b", 2, 0.0, [1, 1]), ("c", 3, 0.0, [-1, -1]), ("d", 4, 0.0, [1, -1, -1, -1])]
JUDGED = np.array([True, False, True, False])


def test_oracle_replaces_r_minus_v_prev_with_the_judges_sign_normalised_as_the_paper_does():
    config = SKPOConfig(upstream_advantage="oracle", segment_judge=JUDGE)
    upstream, _, state = _advantages(config, GROUPS, JUDGED)
    # a = [+1, -1, +1, -1]: mean 0, sample std sqrt(4/3) -> +-0.866025
    np.testing.assert_allclose(upstream, [0.866025, -0.866025, 0.866025, -0.866025], atol=1e-5)
    # The trackers learn R_I as in the paper: prompt 2's V is its R_I = 1, not the oracle's -1.
    assert tracker_to_reward(state.values.value(2)) == pytest.approx(1.0)


def test_random_signs_are_drawn_from_the_seed_and_step_and_normalised_as_the_papers():
    config = SKPOConfig(upstream_advantage="random", segment_judge=JUDGE, seed=3)
    upstream, _, _ = _advantages(config, GROUPS, JUDGED, step=7)
    signs = np.random.default_rng([3, 7]).choice([-1.0, 1.0], size=4)
    np.testing.assert_allclose(upstream, upstream_advantages(signs, np.zeros(4), 1e-6), atol=1e-9)
    again, _, _ = _advantages(config, GROUPS, JUDGED, step=7)
    np.testing.assert_array_equal(upstream, again)


def test_the_agreement_metric_compares_the_papers_advantage_with_the_judge_first_visits_and_revisits_apart():
    config = SKPOConfig(segment_judge=JUDGE)  # the paper's advantage, judged
    state = SKPOState(config)
    state.values.update(4, 0.0, 0.96, 0)  # prompt 4 seen before, V = -1: a revisit
    upstream, metrics, _ = _advantages(config, GROUPS, JUDGED, state=state)
    # a = R_I - V_prev = [1, 1, -1, -0.5 + 1]: mean 0.375, centred [0.625, 0.625, -1.375, 0.125]
    assert np.sign(upstream).tolist() == [1, 1, -1, 1]
    # first visits (1, 2, 3): + clean agrees, + slipped does not, - clean does not: 1 of 3
    assert metrics["skpo/upstream/oracle_agreement_first_visit"] == pytest.approx(1 / 3)
    assert metrics["skpo/upstream/oracle_signed_rows_first_visit"] == 3
    assert metrics["skpo/upstream/oracle_agreeing_rows_first_visit"] == 1
    # the revisit (4): + on a slipped segment: 0 of 1
    assert metrics["skpo/upstream/oracle_agreement_revisit"] == 0.0
    assert metrics["skpo/upstream/oracle_clean_rate"] == 0.5


def test_an_advantage_of_zero_has_no_sign_and_leaves_the_agreement_out():
    config = SKPOConfig(segment_judge=JUDGE, first_visit_upstream="zero")
    _, metrics, _ = _advantages(config, GROUPS, JUDGED)  # every row a first visit, every advantage 0
    assert metrics["skpo/upstream/oracle_signed_rows_first_visit"] == 0
    assert "skpo/upstream/oracle_agreement_first_visit" not in metrics


def test_without_a_judge_no_agreement_is_logged():
    _, metrics, _ = _advantages(SKPOConfig(), GROUPS, None)
    assert not any("oracle" in key for key in metrics)


def test_a_diagnostic_signal_without_verdicts_is_an_error_naming_the_key():
    with pytest.raises(RuntimeError, match="set algorithm.skpo.segment_judge"):
        diagnostic_signal("oracle", None, 0, 1)
    assert diagnostic_signal("paper", None, 0, 1) is None


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["+algorithm.skpo.upstream_advantage=oracle"], "needs a task which can judge a kept segment"),
        (["+algorithm.skpo.upstream_advantage=random"], "set algorithm.skpo.segment_judge=module:function"),
        (
            ["+algorithm.skpo.upstream_advantage=truth"],
            "not one of paper, oracle, random",
        ),
        (["+algorithm.skpo.segment_judge=skpo_verl.demo.task"], "must be 'module:function'"),
        (["+algorithm.skpo.segment_judge=skpo_verl.demo.task:no_such_judge"], "cannot be loaded"),
        ([f"+algorithm.skpo.segment_judge={JUDGE}", "+algorithm.skpo.num_splits=2"], "Use num_splits=1"),
        (["+algorithm.skpo.loss.aggregation=seq_mean"], "loss.aggregation='seq_mean' is not one of per_role"),
    ],
)
def test_diagnostics_and_the_aggregation_are_refused_at_start_up_with_the_key_and_fix(overrides, message):
    with pytest.raises(SKPOConfigError, match=message):
        validate_config(compose_ppo_config(SKPO + overrides))


def test_the_paper_is_the_default_and_a_judged_oracle_run_starts():
    assert SKPOConfig().upstream_advantage == "paper" and SKPOConfig().segment_judge is None
    assert SKPOConfig().loss.aggregation == "per_role"
    overrides = [f"+algorithm.skpo.segment_judge={JUDGE}", "+algorithm.skpo.upstream_advantage=oracle"]
    assert validate_config(compose_ppo_config(SKPO + overrides)).upstream_advantage == "oracle"
    assert load_segment_judge(JUDGE) is segment_is_clean
