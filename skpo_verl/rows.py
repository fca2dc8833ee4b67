"""The row contract between SKPO's rollout, its driver and its loss (docs/row_contract.md).

This module is the one owner of every name and dtype that crosses a process boundary:

- `ROLLOUT_FIELDS`: what the `skpo_agent` agent loop writes on every row it returns (top-level
  TransferQueue columns); the agent loop's output class and the driver's fetch list derive
  from it.
- `SKPORows`: the driver's view of one training batch, built from those columns, which the
  estimator reads.
- The driver-to-loss columns: written at advantage time, read by the loss shim.

A rollout for one prompt q emits one upstream row (prompt q, response s) and G downstream
rows (prompt [s, q], response o_i). No verl import here.
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

ROLLOUT_FIELDS: Mapping[str, type] = {
    IS_UPSTREAM: np.int64,
    SPLIT_LENGTH: np.int64,
    SEGMENT_LENGTH: np.int64,
    SEGMENT_NLL: np.float32,
    CANDIDATE_TOKENS: np.int64,
    EARLY_EOS_CANDIDATES: np.int64,
    COMPLETION_REWARD: np.float32,
    COMPLETION_TOKENS: np.int64,
}

# Columns verl already provides and SKPO relies on.
PROMPT_KEY = "index"  # stable prompt id: the dataset's extra_info.index (must be present and unique)
GROUP = "uid"  # one uid per prompt per step: groups the upstream row with its G downstream rows
SESSION = "session_id"  # downstream answer number 0..G-1 (the upstream row shares session 0)

# Driver -> rollout: added to each prompt before it is rolled out (read from the agent loop's kwargs).
PROMPT_SPLIT_LENGTH = SPLIT_LENGTH

# What the driver fetches from TransferQueue at advantage time.
ESTIMATOR_FIELDS = (GROUP, PROMPT_KEY, SESSION, "response_mask", "rm_scores", *ROLLOUT_FIELDS)

# Driver -> loss (actor workers).
UPSTREAM_MASK = "skpo_upstream_mask"  # int64 [B] column, written at advantage time: 1 on real upstream rows
UPSTREAM_ROWS = "skpo_upstream_rows"  # non-tensor, mini-batch-wide count (patches.engine_role_counts)
DOWNSTREAM_TOKENS = "skpo_downstream_tokens"  # non-tensor, mini-batch-wide count (patches.engine_role_counts)
# Non-tensor dict in the batch's extra info: the driver's `algorithm.skpo.loss`. The actor workers see
# only the actor's config, so the driver ships the loss hyperparameters with each update.
LOSS_CONFIG = "skpo_loss"


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

    @classmethod
    def from_columns(cls, columns: Mapping[str, Sequence], is_padding: Sequence[bool]) -> SKPORows:
        """Build from fetched columns (lists, arrays or tensors converted with `.tolist()`)."""
        missing = [name for name in ROLLOUT_FIELDS if name not in columns]
        if missing:
            raise RuntimeError(
                f"Training rows lack the SKPO fields {missing}: they were not produced by the skpo_agent agent loop. "
                "Set actor_rollout_ref.rollout.agent.default_agent_loop=skpo_agent and do not set a per-row "
                "agent_name column in the training data."
            )

        def column(name, dtype=object):
            return np.array(list(columns[name]), dtype=dtype)

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
        )
