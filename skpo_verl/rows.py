"""The row contract between SKPO's rollout and its learning half (docs/row_contract.md).

A rollout for one prompt q emits one upstream row (prompt q, response s) and G downstream
rows (prompt [s, q], response o_i). Besides verl's own columns (`prompts`, `responses`,
`response_mask`, `rollout_log_probs`, `rm_scores`, `uid`, `index`, `session_id`), every
row carries the fields below as top-level TransferQueue columns. No verl import here.
"""

# Field names (top-level columns; every output of the agent loop carries all of them).
IS_UPSTREAM = "skpo_is_upstream"  # int: 1 for the upstream row, 0 for a downstream row
SPLIT_LENGTH = "skpo_split_length"  # int: t_q, the split length this prompt was rolled out with
SEGMENT_LENGTH = "skpo_segment_length"  # int: tokens in the kept segment s
SEGMENT_NLL = "skpo_segment_nll"  # float: mean NLL of s under the rollout policy
CANDIDATE_TOKENS = "skpo_candidate_tokens"  # int: tokens decoded over all G candidates
EARLY_EOS_CANDIDATES = "skpo_early_eos_candidates"  # int: candidates that ended before t_q

# Columns verl already provides and SKPO relies on.
PROMPT_KEY = "index"  # stable prompt id: the dataset's extra_info.index (must be present and unique)
GROUP = "uid"  # one uid per prompt per step: groups the upstream row with its G downstream rows
SESSION = "session_id"  # downstream answer number 0..G-1 (the upstream row shares session 0)

SKPO_FIELDS = (IS_UPSTREAM, SPLIT_LENGTH, SEGMENT_LENGTH, SEGMENT_NLL, CANDIDATE_TOKENS, EARLY_EOS_CANDIDATES)

# Column added by the driver to each prompt before rollout (read by the agent loop).
PROMPT_SPLIT_LENGTH = SPLIT_LENGTH
