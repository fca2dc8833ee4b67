"""SKPOState: everything SKPO keeps between steps, owned by the driver.

One object holds the per-prompt value tracker V(q), the per-prompt length tracker L_q and
the random generator that draws split lengths. The V1 trainer shim creates it, the
estimator updates it, and it is saved in every checkpoint folder as `skpo_state.pt` and
restored on resume, so a preempted run continues exactly. No verl import.

With `tracker.initial_values` (SPO's offline warm start) the value tracker starts seeded from
the values file (`skpo_verl.training.initial_values`): each listed prompt at its estimated
success rate with N0 = 1 / (1 - rho_min) observations, dated step 0 (the initial policy).
Nothing else changes: what is saved and restored is the tracker as it then evolves, so a
resumed run continues from its checkpoint, not from the file.

Multi-split (`num_splits` = K > 1) adds `stage_values`: one value tracker per (prompt key, k)
for the upstream rows of stages k = 2..K (stage 1 stays on `values`, keyed by the prompt, which
the prioritized sampler reads), saved and restored with the rest. With one split it stays empty
and is not written, so a K = 1 checkpoint is as before.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from skpo_verl.config import SKPOConfig
from skpo_verl.core.split import split_length
from skpo_verl.core.tracker import BetaTracker, LengthTracker, forgetting_factor, prior_count, reward_to_tracker
from skpo_verl.training.initial_values import InitialValues, read_initial_values

STATE_FILE = "skpo_state.pt"
STATE_FORMAT = 1


class StoredSegment(NamedTuple):
    prompt_ids: list[int]
    response_ids: list[int]
    log_probs: list[float]


class SKPOState:
    def __init__(self, config: SKPOConfig):
        self.config = config
        tracker = config.tracker
        self.values = BetaTracker(initial_value=float(reward_to_tracker(tracker.initial_value)))
        # Multi-split stages k >= 2, keyed (prompt key, k); each starts at initial_value with zero counts.
        self.stage_values = BetaTracker(initial_value=float(reward_to_tracker(tracker.initial_value)))
        self.lengths = LengthTracker(initial_length=tracker.initial_length)
        self.rng = np.random.default_rng(config.seed)
        # divergence=logprob only: each prompt's last kept segment, to re-score at its next visit.
        self.segments: dict[Any, StoredSegment] = {}
        self.initial_values: InitialValues | None = None
        if tracker.initial_values is not None:
            self.initial_values = read_initial_values(tracker.initial_values)
            count = prior_count(tracker.rho_min)
            for key, success_rate in self.initial_values.values.items():
                # Step 0: estimated with the initial policy, so with divergence=steps a prompt first drawn
                # at step t forgets the estimate by rho(t) like any observation made at step 0.
                self.values.seed(key, success_rate, count, step=0)

    def value_tracker(self, stage: int) -> BetaTracker:
        """The value tracker of a stage's upstream rows: `values` for stage 1, `stage_values` after."""
        return self.values if stage == 1 else self.stage_values

    @staticmethod
    def tracker_key(prompt_key: Any, stage: int) -> Any:
        """A stage's key in its value tracker: the prompt key for stage 1, (prompt key, k) after."""
        if stage == 1:
            return prompt_key
        return (prompt_key.item() if isinstance(prompt_key, np.generic) else prompt_key, int(stage))

    def forgetting(self, prompt_key: Any, step: int, logprob_divergence: float | None = None, stage: int = 1) -> float:
        """rho for the prompt's next update, from the configured divergence D.

        steps: D = steps since the prompt was last observed. logprob: D is measured by the
        caller (the stored segment re-scored by the current actor). A prompt seen for the
        first time, or with nothing to re-score, gets rho_max (as SPO's recipe); with SKPO's
        zero prior counts the first observation overwrites the initial value whatever rho is.
        A value loaded from `tracker.initial_values` counts as observed at step 0. Multi-split's
        stage k >= 2 reads its own tracker's last observation (steps), or the prompt's D (logprob).
        """
        tracker = self.config.tracker
        last = self.value_tracker(stage).last_seen(self.tracker_key(prompt_key, stage))
        if tracker.divergence == "steps":
            divergence = None if last is None else float(step - last)
        else:
            divergence = logprob_divergence
        if divergence is None:
            return tracker.rho_max
        return forgetting_factor(divergence, self.config.half_life, tracker.rho_min, tracker.rho_max)

    def remember_segment(self, prompt_key: Any, prompt_ids, response_ids, log_probs) -> None:
        """Keep the prompt's latest kept segment and its log-probs under the policy that trained on it."""
        if len(response_ids) != len(log_probs) or not len(response_ids):
            raise ValueError("a stored segment needs one log-prob per response token and at least one token")
        self.segments[prompt_key] = StoredSegment(
            [int(t) for t in prompt_ids], [int(t) for t in response_ids], [float(x) for x in log_probs]
        )

    def split_lengths(self, prompt_keys: Sequence[Any], step: int) -> np.ndarray:
        """t_q for each prompt about to be rolled out (docs/algorithm.md, Rollout step 1)."""
        cfg = self.config
        return np.array(
            [
                split_length(cfg.split_rule, self.lengths.value(key), cfg.split_low, cfg.split_high, step, self.rng)
                for key in prompt_keys
            ],
            np.int64,
        )

    def later_split_lengths(self, prompt_keys: Sequence[Any], step: int) -> np.ndarray:
        """Multi-split: t_2..t_K per prompt, int64 [len(prompt_keys), K - 1], by the same rule from L_q.

        Drawn after `split_lengths` from the same generator, so t_1 is the draw a one-split run
        makes. Whether a stage runs is decided in the rollout (`core.split.next_stage_runs`).
        """
        cfg = self.config
        return np.array(
            [
                [
                    split_length(cfg.split_rule, self.lengths.value(key), cfg.split_low, cfg.split_high, step, self.rng)
                    for _ in range(cfg.num_splits - 1)
                ]
                for key in prompt_keys
            ],
            np.int64,
        ).reshape(len(prompt_keys), cfg.num_splits - 1)

    def state_dict(self) -> dict:
        return {
            "format": STATE_FORMAT,
            "config": self.config.to_dict(),
            "values": self.values.state_dict(),
            "lengths": self.lengths.state_dict(),
            "rng": self.rng.bit_generator.state,
            "segments": {key: tuple(segment) for key, segment in self.segments.items()},
            **({"stage_values": self.stage_values.state_dict()} if self.config.num_splits > 1 else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"Unknown SKPO state format {state.get('format')!r}; expected {STATE_FORMAT}.")
        self.values.load_state_dict(state["values"])
        self.lengths.load_state_dict(state["lengths"])
        self.rng.bit_generator.state = state["rng"]
        self.segments = {key: StoredSegment(*segment) for key, segment in state["segments"].items()}
        if "stage_values" in state:
            self.stage_values.load_state_dict(state["stage_values"])
        elif self.config.num_splits > 1:
            # A checkpoint of a one-split run resumed with several: the later stages start unseen.
            self.stage_values = BetaTracker(initial_value=float(reward_to_tracker(self.config.tracker.initial_value)))

    def save(self, checkpoint_dir: str) -> str:
        """Write atomically into the checkpoint folder; returns the file path."""
        os.makedirs(checkpoint_dir, exist_ok=True)
        path = os.path.join(checkpoint_dir, STATE_FILE)
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as f:
            pickle.dump(self.state_dict(), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
        return path

    def load(self, checkpoint_dir: str) -> str:
        path = os.path.join(checkpoint_dir, STATE_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path} is missing: this checkpoint was not written by an SKPO run (or predates skpo-verl's "
                "state saving), so the per-prompt trackers cannot be restored. Resume from an SKPO checkpoint, "
                "or start fresh with trainer.resume_mode=disable."
            )
        with open(path, "rb") as f:
            self.load_state_dict(pickle.load(f))
        return path
