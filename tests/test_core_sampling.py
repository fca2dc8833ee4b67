"""skpo_verl.core.sampling: SPO's prioritized prompt sampling, and the core's framework-freedom."""

import pickle
import subprocess
import sys

import numpy as np
import pytest

from skpo_verl.config import SKPOConfig
from skpo_verl.core.sampling import PrioritizedPromptSampler, priority_weights
from skpo_verl.core.tracker import BetaTracker

EPS = SKPOConfig().priority_eps  # 0.05


def test_priority_weights_hand_case():
    # w = sqrt(V(1-V)) + 0.05: V=0.5 -> 0.55, V=0 -> 0.05, V=1 -> 0.05, V=0.9 -> sqrt(0.09) + 0.05 = 0.35; sum 1
    np.testing.assert_allclose(
        priority_weights(np.array([0.5, 0.0, 1.0, 0.9]), EPS), [0.55, 0.05, 0.05, 0.35], rtol=0, atol=1e-15
    )


def test_priority_weights_clip_values_into_tracker_space():
    # -0.2 -> 0 and 1.3 -> 1: both weigh eps -> [0.5, 0.5] (unclipped, sqrt of a negative would be NaN)
    np.testing.assert_array_equal(priority_weights(np.array([-0.2, 1.3]), EPS), [0.5, 0.5])


def test_priority_weights_reject_bad_input():
    with pytest.raises(ValueError):
        priority_weights(np.array([0.5]), 0.0)
    with pytest.raises(ValueError):
        priority_weights(np.array([]), EPS)


def _tracker_with_values():
    # V = [1, 0, unseen 0.5, 0.9] for keys [10, 11, 12, 13] -> p = [0.05, 0.05, 0.55, 0.35]
    tracker = BetaTracker(initial_value=0.5)
    for key, value in ((10, 1.0), (11, 0.0), (13, 0.9)):
        tracker.update(key, value, rho=0.9, step=0)
    return tracker


def test_sampler_epoch_has_dataset_length_and_frequencies_follow_the_weights():
    sampler = PrioritizedPromptSampler([10, 11, 12, 13], _tracker_with_values(), eps=EPS, seed=0)
    assert len(sampler) == 4
    epochs = [list(sampler) for _ in range(5000)]
    assert all(len(epoch) == 4 for epoch in epochs)
    frequencies = np.bincount(np.concatenate(epochs), minlength=4) / 20000
    # 20000 draws: the standard error of a frequency is at most 0.0036
    np.testing.assert_allclose(frequencies, [0.05, 0.05, 0.55, 0.35], atol=0.015)


def test_sampler_reads_tracker_updates_made_between_draws():
    tracker = BetaTracker(initial_value=0.5)
    tracker.update("x", 1.0, rho=0.9, step=0)  # V(x) = 1, V(y) = 0.5 unseen
    sampler = PrioritizedPromptSampler(["x", "y"], tracker, eps=1e-9, seed=0)
    draws = iter(sampler)
    # p(x) = 1e-9 / (0.5 + 2e-9): position 1 (y)
    assert next(draws) == 1
    tracker.update("x", 0.0, rho=1.0, step=1)  # S = 1, N = 2: V(x) = 0.5
    tracker.update("y", 1.0, rho=0.9, step=1)  # V(y) = 1
    assert next(draws) == 0


def _draws(sampler, count):
    out = []
    while len(out) < count:
        for position in sampler:
            out.append(position)
            if len(out) == count:
                break
    return out


def test_sampler_resumes_mid_epoch_exactly():
    keys = list(range(10))
    tracker = BetaTracker(initial_value=0.5)
    for key in keys[:6]:
        tracker.update(key, key / 5.0, rho=0.9, step=0)
    sampler = PrioritizedPromptSampler(keys, tracker, eps=EPS, seed=7)
    first = iter(sampler)
    consumed = [next(first) for _ in range(3)]
    state = pickle.loads(pickle.dumps(sampler.state_dict()))
    # the interrupted run: the rest of this epoch (7) and all of the next (10)
    expected = [next(first) for _ in range(7)] + _draws(sampler, 10)

    resumed = PrioritizedPromptSampler(keys, tracker, eps=EPS, seed=123)  # seed is overwritten by the state
    resumed.load_state_dict(state)
    rest_of_epoch = list(resumed)
    assert len(rest_of_epoch) == 7
    assert rest_of_epoch + list(resumed) == expected
    # which is the stream of a run that was never interrupted
    assert _draws(PrioritizedPromptSampler(keys, tracker, eps=EPS, seed=7), 20) == consumed + expected


def test_sampler_state_rejects_another_dataset():
    sampler = PrioritizedPromptSampler([1, 2, 3], BetaTracker(0.5), eps=EPS, seed=0)
    with pytest.raises(ValueError, match="3 prompts"):
        PrioritizedPromptSampler([1, 2], BetaTracker(0.5), eps=EPS, seed=0).load_state_dict(sampler.state_dict())


def test_sampler_rejects_an_empty_dataset():
    with pytest.raises(ValueError):
        PrioritizedPromptSampler([], BetaTracker(0.5), eps=EPS, seed=0)


def test_core_imports_neither_verl_nor_torch_outside_the_loss():
    code = (
        "import sys\n"
        "import skpo_verl.core.tracker, skpo_verl.core.split, skpo_verl.core.selection\n"
        "import skpo_verl.core.advantages, skpo_verl.core.sampling\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "import skpo_verl.core.loss\n"
        "assert not any(name == 'verl' or name.startswith('verl.') for name in sys.modules), 'verl imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
