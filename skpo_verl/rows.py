"""The row contract between SKPO's rollout, its driver and its loss (docs/row_contract.md).

This module is the one owner of every name and dtype that crosses a process boundary:

- `ROLLOUT_FIELDS`: what the `skpo_agent` agent loop writes on every row it returns (top-level
  TransferQueue columns); the agent loop's output class and the driver's fetch list derive
  from it.
- `SKPORows`: the driver's view of one training batch, built from those columns, which the
  estimator reads.
- The driver-to-loss columns: written at advantage time, read by the loss shim.

A rollout for one prompt q emits one upstream row (prompt q, response s) and G downstream
rows (prompt [s, q], response o_i); with `algorithm.skpo.num_splits` = K > 1, up to K such
stages, stage k's rows carrying `skpo_stage` = k (upstream prompt [q, s_1..s_{k-1}], response
s_k; downstream prompt [s_1..s_k, q]); with `algorithm.skpo.upstream_baseline=spatial`, two kept
segments s_a, s_b, each with its upstream row and G/2 of the answers, their rows carrying
`skpo_segment_index` = 0 and 1. No verl import here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Rollout -> driver: per-row fields (name -> numpy dtype), every output of the agent loop carries all.
IS_UPSTREAM = "skpo_is_upstream"  # 1 for the upstream row, 0 for a downstream row
SPLIT_LENGTH = "skpo_split_length"  # t_q, the split length this prompt was rolled out with
SEGMENT_LENGTH = "skpo_segment_length"  # tokens in the kept segment s
SEGMENT_NLL = "skpo_segment_nll"  # mean NLL of s under the rollout policy
CANDIDATE_TOKENS = "skpo_candidate_tokens"  # tokens decoded over all G candidates
EARLY_EOS_CANDIDATES = "skpo_early_eos_candidates"  # candidates that ended (EOS) within t_q
# upstream_reward=own_completion ("w/o MC"): the reward of the kept candidate's own completion
# (q -> s -> rest), judged by verl's reward path; 0 on every other row and in other modes.
COMPLETION_REWARD = "skpo_completion_reward"
# upstream_reward=own_completion: tokens decoded to complete the kept candidate (the rest after it;
# 0 when it had ended); 0 on every other row and in other modes. For cost metrics only.
COMPLETION_TOKENS = "skpo_completion_tokens"
# Multi-split (algorithm.skpo.num_splits): the stage k = 1..K the row belongs to (1 with one split),
# and whether the stage's kept candidate ended (EOS) within its split length, which stops later stages.
STAGE = "skpo_stage"
SEGMENT_ENDED = "skpo_segment_ended"
# upstream_baseline=spatial: which of the prompt's two kept segments the row belongs to, 0 for s_a (the selection
# rule's) and 1 for s_b; 0 on every row in the default mode.
SEGMENT_INDEX = "skpo_segment_index"

ROLLOUT_FIELDS: Mapping[str, type] = {
    IS_UPSTREAM: np.int64,
    SPLIT_LENGTH: np.int64,
    SEGMENT_LENGTH: np.int64,
    SEGMENT_NLL: np.float32,
    CANDIDATE_TOKENS: np.int64,
    EARLY_EOS_CANDIDATES: np.int64,
    COMPLETION_REWARD: np.float32,
    COMPLETION_TOKENS: np.int64,
    STAGE: np.int64,
    SEGMENT_ENDED: np.int64,
    SEGMENT_INDEX: np.int64,
}

# Columns verl already provides and SKPO relies on.
PROMPT_KEY = "index"  # stable prompt id: the dataset's extra_info.index (must be present and unique)
GROUP = "uid"  # one uid per prompt per step: groups the upstream row with its G downstream rows
SESSION = "session_id"  # downstream answer number 0..G-1 (an upstream row shares its session's: 0, or G/2 for s_b)

# Driver -> rollout: added to each prompt before it is rolled out (read from the agent loop's kwargs).
PROMPT_SPLIT_LENGTH = SPLIT_LENGTH
# num_splits = K > 1 only: t_2..t_K per prompt, an int64 [B, K - 1] column drawn by the driver like t_q.
PROMPT_LATER_SPLIT_LENGTHS = "skpo_later_split_lengths"

# What the driver fetches from TransferQueue at advantage time.
ESTIMATOR_FIELDS = (GROUP, PROMPT_KEY, SESSION, "response_mask", "rm_scores", *ROLLOUT_FIELDS)

# Driver -> loss (actor workers).
UPSTREAM_MASK = "skpo_upstream_mask"  # int64 [B] column, written at advantage time: 1 on real upstream rows
# Non-tensor dicts in the batch's extra info, sent by the driver with each actor update (the actor
# workers see only the actor's config): `algorithm.skpo.loss`, and each mini-batch's loss normalisers
# (the step's upstream rows, upstream tokens and downstream tokens over the mini-batches per step;
# skpo_verl.training.loss.LossNormalisers). The loss shim refuses a micro-batch with roles but without either.
LOSS_CONFIG = "skpo_loss"
LOSS_NORMALISERS = "skpo_loss_normalisers"


@dataclass
class SKPORows:
    """The estimator's view of one training batch (length B, padding rows included)."""

    is_upstream: np.ndarray  # bool [B]
    prompt_keys: np.ndarray  # object [B]: the dataset's extra_info.index
    groups: np.ndarray  # object [B]: uid, one per prompt per step
    sessions: np.ndarray  # int [B]
    is_padding: np.ndarray  # bool [B]: rows verl appended to fill mini-batches
    segment_lengths: np.ndarray  # int [B]
    split_lengths: np.ndarray  # int [B]
    completion_rewards: np.ndarray | None = None  # float [B], own_completion mode
    # Rollout statistics, for metrics only (one value per prompt, repeated on its rows).
    segment_nll: np.ndarray | None = None  # float [B]
    candidate_tokens: np.ndarray | None = None  # int [B]
    early_eos_candidates: np.ndarray | None = None  # int [B]
    completion_tokens: np.ndarray | None = None  # int [B], own_completion mode
    # Multi-split: each row's stage (None = every row stage 1, as with num_splits = 1) and whether the
    # stage's kept candidate ended (EOS), for the stop metrics.
    stages: np.ndarray | None = None  # int [B]
    segment_ended: np.ndarray | None = None  # int [B]
    # upstream_baseline=spatial: each row's kept segment, 0 (s_a) or 1 (s_b) (None = every row 0).
    segment_indices: np.ndarray | None = None  # int [B]

    def stage_of_rows(self) -> np.ndarray:
        """int [B]: each row's stage, 1 where the batch carries none."""
        return np.ones(len(self.is_upstream), dtype=np.int64) if self.stages is None else self.stages

    def stage_groups(self) -> np.ndarray:
        """object [B]: the group a row is normalised in, its uid with one split, (uid, stage) with several."""
        stages = self.stage_of_rows()
        if np.all(stages == 1):
            return self.groups
        out = np.empty(len(stages), dtype=object)
        out[:] = [(group, int(stage)) for group, stage in zip(self.groups, stages)]
        return out

    def segment_index_of_rows(self) -> np.ndarray:
        """int [B]: each row's kept segment (upstream_baseline=spatial), 0 where the batch carries none."""
        if self.segment_indices is None:
            return np.zeros(len(self.is_upstream), dtype=np.int64)
        return self.segment_indices

    def segment_groups(self) -> np.ndarray:
        """object [B]: the kept segment a row belongs to: its `stage_groups` label, paired with its segment
        index when the batch holds second segments (upstream_baseline=spatial). An upstream row's R_I
        is the mean reward of its segment group's answers."""
        groups = self.stage_groups()
        indices = self.segment_index_of_rows()
        if not np.any(indices):
            return groups
        out = np.empty(len(groups), dtype=object)
        out[:] = [(group, int(index)) for group, index in zip(groups, indices)]
        return out

    @classmethod
    def from_columns(cls, columns: Mapping[str, Sequence], is_padding: Sequence[bool]) -> SKPORows:
        """Build from fetched columns (lists, arrays or tensors converted with `.tolist()`)."""
        # Rows without the multi-split fields are stage 1 (what every row of a one-split run is), rows without
        # a segment index segment 0 (what every row of the default mode is).
        optional_fields = (STAGE, SEGMENT_ENDED, SEGMENT_INDEX)
        missing = [name for name in ROLLOUT_FIELDS if name not in columns and name not in optional_fields]
        if missing:
            raise RuntimeError(
                f"Training rows lack the SKPO fields {missing}: they were not produced by the skpo_agent agent loop. "
                "Set actor_rollout_ref.rollout.agent.default_agent_loop=skpo_agent and do not set a per-row "
                "agent_name column in the training data."
            )

        def column(name, dtype=object):
            return np.array(list(columns[name]), dtype=dtype)

        def optional(name):
            return column(name, np.int64) if name in columns else None

        return cls(
            is_upstream=column(IS_UPSTREAM, np.int64).astype(bool),
            prompt_keys=column(PROMPT_KEY),
            groups=column(GROUP),
            sessions=column(SESSION, np.int64),
            is_padding=np.asarray(is_padding, dtype=bool),
            segment_lengths=column(SEGMENT_LENGTH, np.int64),
            split_lengths=column(SPLIT_LENGTH, np.int64),
            completion_rewards=column(COMPLETION_REWARD, np.float64),
            segment_nll=column(SEGMENT_NLL, np.float64),
            candidate_tokens=column(CANDIDATE_TOKENS, np.int64),
            early_eos_candidates=column(EARLY_EOS_CANDIDATES, np.int64),
            completion_tokens=column(COMPLETION_TOKENS, np.int64),
            stages=optional(STAGE),
            segment_ended=optional(SEGMENT_ENDED),
            segment_indices=optional(SEGMENT_INDEX),
        )
