"""SKPO's state survives save → a new process → load, bit for bit."""

import pickle
import subprocess
import sys

import numpy as np

from skpo_verl.config import SKPOConfig
from skpo_verl.training.state import STATE_FILE, SKPOState

RELOAD = """
import pickle, sys
from skpo_verl.config import SKPOConfig
from skpo_verl.training.state import SKPOState
state = SKPOState(SKPOConfig())
state.load(sys.argv[1])
loaded = state.state_dict()
after = state.split_lengths(list(range(20)), step=99).tolist()
pickle.dump({"state": loaded, "draws": after}, open(sys.argv[2], "wb"))
"""


def _busy_state() -> SKPOState:
    state = SKPOState(SKPOConfig())
    rng = np.random.default_rng(3)
    for step in range(1, 60):
        key = int(rng.integers(0, 20)) if step % 3 else f"prompt-{step % 7}"
        rho = state.forgetting(key, step)
        state.values.update(key, float(rng.uniform()), rho, step)
        state.lengths.update(key, float(rng.integers(10, 3000)), rho, step)
        state.split_lengths([key], step)
    return state


def test_state_round_trips_through_a_new_process_exactly(tmp_path):
    state = _busy_state()
    path = state.save(str(tmp_path / "global_step_59"))
    assert path.endswith(STATE_FILE)
    out = tmp_path / "reloaded.pkl"
    subprocess.run([sys.executable, "-c", RELOAD, str(tmp_path / "global_step_59"), str(out)], check=True, timeout=120)
    reloaded = pickle.loads(out.read_bytes())

    assert reloaded["state"] == state.state_dict()
    # The split-length generator continues where it stopped: the same next draws.
    assert reloaded["draws"] == state.split_lengths(list(range(20)), step=99).tolist()
    # Keys keep their types (int and str prompt keys are different prompts).
    keys = reloaded["state"]["values"]["keys"]
    assert {type(k) for k in keys} == {int, str} and keys == state.state_dict()["values"]["keys"]


def test_logprob_mode_uses_the_measured_divergence_and_checkpoints_stored_segments(tmp_path):
    state = SKPOState(SKPOConfig.from_mapping({"tracker": {"divergence": "logprob"}}))
    # Nothing stored yet (first visit): rho_max.
    assert state.forgetting("q", step=3, logprob_divergence=None) == 0.96
    state.values.update("q", 1.0, 0.96, 3)
    # D = 0.01 with D_half = 0.06: 2^(-1/6) = 0.8909; steps since last seen do not matter.
    assert state.forgetting("q", step=1000, logprob_divergence=0.01) == 2 ** (-1 / 6)
    state.remember_segment("q", [5, 6], [7, 8, 9], [-0.5, -1.0, -1.5])
    state.save(str(tmp_path))
    reloaded = SKPOState(SKPOConfig.from_mapping({"tracker": {"divergence": "logprob"}}))
    reloaded.load(str(tmp_path))
    assert reloaded.segments == {"q": ([5, 6], [7, 8, 9], [-0.5, -1.0, -1.5])}
