"""SKPO's state survives save → a new process → load, bit for bit."""

import pickle
import subprocess
import sys

import numpy as np

from skpo_verl.config import SKPOConfig
from skpo_verl.state import STATE_FILE, SKPOState

RELOAD = """
import pickle, sys
from skpo_verl.config import SKPOConfig
from skpo_verl.state import SKPOState
state = SKPOState(SKPOConfig())
state.load(sys.argv[1])
after = state.split_lengths(list(range(20)), step=99).tolist()
pickle.dump({"state": state.state_dict(), "draws": after}, open(sys.argv[2], "wb"))
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
