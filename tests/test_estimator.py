"""The `skpo` estimator on hand-built batches: repeated prompts, the w/o-MC reward, batch normalisation.

Rewards are +-1 on the last response token; every number below is worked out by hand.
"""

import numpy as np
import pytest
import torch

from skpo_verl.config import SKPOConfig
from skpo_verl.core.tracker import tracker_to_reward
from skpo_verl.rows import SKPORows
from skpo_verl.training.estimator import compute_skpo_advantage
from skpo_verl.training.state import SKPOState

T = 4


def _batch(groups):
    """groups: list of (uid, prompt_key, upstream completion reward, downstream rewards)."""
    is_up, keys, uids, sessions, completion, rewards = [], [], [], [], [], []
    for uid, key, own, answers in groups:
        (
            is_up.append(True),
            keys.append(key),
            uids.append(uid),
            sessions.append(0),
            completion.append(own),
            rewards.append(0.0),
        )
        for session, reward in enumerate(answers):
            is_up.append(False), keys.append(key), uids.append(uid), sessions.append(session)
            completion.append(0.0), rewards.append(reward)
    n = len(is_up)
    rows = SKPORows(
        is_upstream=np.array(is_up),
        prompt_keys=np.array(keys, dtype=object),
        groups=np.array(uids, dtype=object),
        sessions=np.array(sessions),
        is_padding=np.zeros(n, dtype=bool),
        segment_lengths=np.full(n, 2),
        split_lengths=np.full(n, 3),
        completion_rewards=np.array(completion),
    )
    token_rewards = torch.zeros(n, T)
    token_rewards[:, -1] = torch.tensor(rewards)
    return token_rewards, torch.ones(n, T), rows


def _run(config, groups, state=None, step=1, metrics=None, completion_tokens=None):
    state = state or SKPOState(config)
    token_rewards, mask, rows = _batch(groups)
    rows.completion_tokens = completion_tokens
    advantages, _ = compute_skpo_advantage(
        token_rewards, mask, skpo_rows=rows, skpo_state=state, global_step=step, metrics=metrics
    )
    return advantages[:, 0].numpy(), rows, state


def test_a_prompt_drawn_twice_in_one_step_updates_its_trackers_once_with_the_mean_of_its_occurrences():
    config = SKPOConfig()
    # Prompt 7 twice (R_I = 1 and 0), prompt 8 once (R_I = -1).
    groups = [("u1", 7, 0.0, [1, 1]), ("u2", 7, 0.0, [1, -1]), ("u3", 8, 0.0, [-1, -1])]
    advantages, rows, state = _run(config, groups)
    # Both occurrences are judged against the same V_prev = 0 (reward space): raw A = 1, 0, -1,
    # mean 0, sample std 1 -> 1, 0, -1.
    np.testing.assert_allclose(advantages[rows.is_upstream], [1.0, 0.0, -1.0], atol=1e-5)
    # One update per prompt: the first observation overwrites V, with the mean R_I = 0.5.
    assert tracker_to_reward(state.values.value(7)) == pytest.approx(0.5)
    assert state.values.count(7) == pytest.approx(1.0)
    assert state.values.version == 2  # prompts 7 and 8, one update each


def test_own_completion_rewards_the_upstream_row_with_the_completion_not_its_answers():
    config = SKPOConfig(upstream_reward="own_completion")
    # Group a: answers all wrong but the completion right; group b: answers right, completion wrong.
    groups = [("a", 1, 1.0, [-1, -1]), ("b", 2, -1.0, [1, 1])]
    advantages, rows, state = _run(config, groups)
    # raw A = R_I - V_prev = 1 - 0 and -1 - 0 -> normalised +-1/sqrt(2) / ... = (+-1) / std(ddof=1)=sqrt(2)
    np.testing.assert_allclose(advantages[rows.is_upstream], [2**-0.5, -(2**-0.5)], atol=1e-5)
    assert tracker_to_reward(state.values.value(1)) == pytest.approx(1.0)


def test_own_completion_logs_the_tokens_its_completions_decoded_per_prompt():
    groups = [("a", 1, 1.0, [-1, -1]), ("b", 2, -1.0, [1, 1])]
    # Rows: up a, 2 answers, up b, 2 answers; a's completion decoded 7 tokens, b's candidate had ended (0).
    tokens = np.array([7, 0, 0, 0, 0, 0])
    metrics = {}
    _run(SKPOConfig(upstream_reward="own_completion"), groups, metrics=metrics, completion_tokens=tokens)
    assert metrics["skpo/rollout/completion_tokens_mean"] == pytest.approx(3.5)
    metrics = {}
    _run(SKPOConfig(), groups, metrics=metrics, completion_tokens=np.zeros(6, dtype=int))
    assert "skpo/rollout/completion_tokens_mean" not in metrics  # no completion in the paper's default mode


def test_batch_downstream_normalisation_is_selected_by_config():
    groups = [("a", 1, 0.0, [1, -1]), ("b", 2, 0.0, [1, 1, 1])]
    down = lambda config: _run(config, groups)[0][[1, 2, 4, 5, 6]]  # noqa: E731 - rows of the answers
    # group: (+-1) / std_a = +-1/sqrt(2); batch: centred [1, -1, 0, 0, 0] / sqrt(0.5) = +-sqrt(2)
    np.testing.assert_allclose(down(SKPOConfig()), [2**-0.5, -(2**-0.5), 0, 0, 0], atol=1e-5)
    np.testing.assert_allclose(down(SKPOConfig(downstream_norm="batch")), [2**0.5, -(2**0.5), 0, 0, 0], atol=1e-5)


def test_the_former_single_mode_is_refused_with_its_new_names():
    with pytest.raises(ValueError, match="own_completion .* first_answer"):
        SKPOConfig(upstream_reward="single")


def test_first_visit_zero_gives_first_visits_no_upstream_advantage_and_normalises_the_revisits_alone():
    config = SKPOConfig(first_visit_upstream="zero")
    state = SKPOState(config)
    # Prompts 1 and 2 were seen at step 1 (tracker space 0.75 and 0.25, i.e. V = 0.5 and -0.5).
    state.values.update(1, 0.75, 0.96, 1)
    state.values.update(2, 0.25, 0.96, 1)
    # Step 2: prompt 1 (R_I = 1), prompt 2 (R_I = 0), prompt 3 first visit (R_I = 1), prompt 4 first visit (R_I = -1).
    groups = [("a", 1, 0.0, [1, 1]), ("b", 2, 0.0, [1, -1]), ("c", 3, 0.0, [1, 1]), ("d", 4, 0.0, [-1, -1])]
    metrics = {}
    advantages, rows, _ = _run(config, groups, state=state, step=2, metrics=metrics)
    # Revisits: raw A = 1 - 0.5 = 0.5 and 0 - (-0.5) = 0.5: equal, so 0 after normalisation; first visits 0.
    np.testing.assert_allclose(advantages[rows.is_upstream], [0.0, 0.0, 0.0, 0.0], atol=1e-6)
    assert metrics["skpo/upstream/first_visit_rate"] == pytest.approx(0.5)
    # The paper's rule on the same batch and state: raw A = 0.5, 0.5, 1 - 0, -1 - 0; mean 0.25,
    # sample std sqrt((0.0625 + 0.0625 + 0.5625 + 1.5625) / 3) = sqrt(0.75) = 0.866025.
    state = SKPOState(SKPOConfig())
    state.values.update(1, 0.75, 0.96, 1)
    state.values.update(2, 0.25, 0.96, 1)
    advantages, rows, _ = _run(SKPOConfig(), groups, state=state, step=2)
    expected = (np.array([0.5, 0.5, 1.0, -1.0]) - 0.25) / 0.8660254
    np.testing.assert_allclose(advantages[rows.is_upstream], expected, atol=1e-5)


def test_first_visit_zero_keeps_the_sign_of_revisits_against_their_own_baselines():
    config = SKPOConfig(first_visit_upstream="zero")
    state = SKPOState(config)
    state.values.update(1, 0.75, 0.96, 1)  # V = 0.5
    state.values.update(2, 0.75, 0.96, 1)  # V = 0.5
    # Prompt 1: R_I = 1 (raw +0.5); prompt 2: R_I = 0 (raw -0.5); prompt 3 first visit, R_I = 0.5.
    groups = [("a", 1, 0.0, [1, 1]), ("b", 2, 0.0, [1, -1]), ("c", 3, 0.0, [1, 1, 1, -1])]
    advantages, rows, state = _run(config, groups, state=state, step=2)
    # Revisits only: raw 0.5, -0.5, mean 0, sample std sqrt(0.5) -> +-0.707107; the first visit 0.
    np.testing.assert_allclose(advantages[rows.is_upstream], [2**-0.5, -(2**-0.5), 0.0], atol=1e-5)
    # Its tracker still takes the observation: the next visit is judged against it.
    assert tracker_to_reward(state.values.value(3)) == pytest.approx(0.5)
    assert 3 in state.values


def test_upstream_norm_rms_keeps_right_segments_positive_on_first_visits():
    # Four first visits (V_prev = 0): R_I = 1, 1, 1, 0.75 (one of four answers wrong).
    groups = [
        ("a", 1, 0.0, [1, 1]),
        ("b", 2, 0.0, [1, 1]),
        ("c", 3, 0.0, [1, 1]),
        ("d", 4, 0.0, [1, 1, 1, 1, 1, 1, 1, -1]),
    ]
    advantages, rows, _ = _run(SKPOConfig(upstream_norm="rms"), groups)
    # rms = sqrt((3 + 0.5625) / 4) = 0.943729: A = 1.059626 (x3), 0.794719.
    np.testing.assert_allclose(advantages[rows.is_upstream], [1.059626] * 3 + [0.794719], atol=1e-5)
    # The paper's batch normalisation on the same batch: mean 0.9375, std 0.125 -> 0.5 (x3), -1.5.
    advantages, rows, _ = _run(SKPOConfig(), groups)
    np.testing.assert_allclose(
        advantages[rows.is_upstream], [0.5, 0.5, 0.5, -1.5], atol=1e-4
    )  # eps = 1e-6 over std 0.125
