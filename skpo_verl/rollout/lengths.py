"""Length budget of SKPO's rollout: the downstream input [s, q] is longer than any dataset prompt.

The kept segment s (at most t_max tokens) is placed before the problem q, so a downstream
prompt can reach `data.max_prompt_length + t_max` tokens and its answer another
`response_length`. verl sizes its buffers from the config, and vLLM silently clamps an
answer's `max_tokens` to what is left of `max_model_len`, so a budget that is too small
would truncate answers without a word. `check_lengths(config)` computes the worst case
from the config and fails at start-up naming the keys to raise; the agent loop re-checks
every prompt it builds (`skpo_verl.rollout.agent_loop`). No verl import here.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from skpo_verl.config import SKPOConfig, skpo_config_from_algorithm

# skip_format=chat re-tokenizes the decoded segment inside the user turn, after which it is
# separated from the problem by CHAT_SEPARATOR. A byte-level BPE re-tokenization of decoded
# text is not guaranteed to give back the same token count (merges across the boundary,
# replacement characters), so the start-up budget keeps this many tokens of slack; the
# agent loop still checks the exact length of every prompt it builds.
CHAT_SEPARATOR = "\n\n"
CHAT_FORMAT_SLACK_TOKENS = 16
MAX_MODEL_LEN_KEY = "actor_rollout_ref.rollout.max_model_len"
CLAMP_KEY = "algorithm.skpo.clamp_answers_to_context"

logger = logging.getLogger(__name__)


class SKPOLengthError(ValueError):
    """A length that cannot hold SKPO's rollout; `problems` lists each one (key and fix)."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()):
        super().__init__(message)
        self.problems = tuple(problems) or (message,)


@dataclass(frozen=True)
class LengthBudget:
    max_split_length: int  # t_max: the longest split length the driver can draw
    max_downstream_prompt: int  # worst-case downstream input ([s, q], or q for unconditional)
    max_sequence: int  # worst-case downstream prompt + answer
    # The smallest answer budget: response_length, or less where clamp_answers_to_context
    # lets the model's context cap answers after the longest [s, q].
    min_answer_length: int


def max_split_length(skpo: SKPOConfig, response_length: int) -> int:
    """The longest t_q: split_high * L_q, where L_q <= max(initial_length, response_length).

    L_q is an exponential moving average of response lengths (each <= response_length),
    started at `tracker.initial_length`, so it never exceeds the larger of the two.
    """
    return math.ceil(skpo.split_high * max(skpo.tracker.initial_length, response_length))


def check_lengths(config: Any) -> LengthBudget:
    """Fail at start-up, naming the keys to raise, if SKPO's worst-case lengths do not fit.

    For the full verl config (a DictConfig as `main_ppo` composes it): the worst case
    (`_worst_case`) is checked by each rule of `_RULES`, one bound each, and every rule that fails
    is reported, in that order, in one `SKPOLengthError`. With
    `algorithm.skpo.clamp_answers_to_context` the smallest answer budget is logged as a warning.
    """
    skpo = skpo_config_from_algorithm(OmegaConf.select(config, "algorithm"))
    worst = _worst_case(config, skpo)
    problems = [problem for rule in _RULES if (problem := rule(skpo, worst)) is not None]
    max_sequence, min_answer_length = _answer_budget(skpo, worst)
    if problems:
        raise SKPOLengthError(
            "SKPO's rollout lengths do not fit the config:\n  - " + "\n  - ".join(problems), tuple(problems)
        )
    return LengthBudget(
        max_split_length=worst.split_length,
        max_downstream_prompt=worst.prompt,
        max_sequence=max_sequence,
        min_answer_length=min_answer_length,
    )


@dataclass(frozen=True)
class _WorstCase:
    """The config's length budgets and the worst case SKPO's rollout can reach within them."""

    response_length: int  # actor_rollout_ref.rollout.response_length
    prompt_length: int  # actor_rollout_ref.rollout.prompt_length
    dataset_prompt_length: int  # data.max_prompt_length
    split_length: int  # t_max
    segments: int  # the kept segments of one prompt together: t_max, or K segments with num_splits = K
    prompt: int  # the longest downstream prompt
    model_len: int | None  # the server's length limit (None: not known offline)
    model_len_key: str  # the setting model_len comes from

    @property
    def sequence(self) -> int:
        """The longest downstream prompt plus a full answer."""
        return self.prompt + self.response_length

    @property
    def overflows_context(self) -> bool:
        """Whether that sequence exceeds the server's length limit (where it is known)."""
        return self.model_len is not None and self.sequence > self.model_len


def _worst_case(config: Any, skpo: SKPOConfig) -> _WorstCase:
    """The budgets the config sets (each required) and the longest split length, segments and prompt."""
    response_length = int(_required(config, "actor_rollout_ref.rollout.response_length"))
    prompt_length = int(_required(config, "actor_rollout_ref.rollout.prompt_length"))
    dataset_prompt_length = int(_required(config, "data.max_prompt_length"))
    t_max = max_split_length(skpo, response_length)
    # num_splits = K: the last stage's answers read all K kept segments, [s_1..s_K, q] (and stage K's
    # upstream row reads q with K - 1 of them), each at most t_max tokens; a stage runs only while the
    # kept segments stay under response_length (core.split.next_stage_runs), so together at most
    # response_length - 1.
    segments = t_max if skpo.num_splits == 1 else min(skpo.num_splits * t_max, response_length - 1)
    if skpo.conditioning == "unconditional":
        worst_prompt = dataset_prompt_length
    else:
        worst_prompt = dataset_prompt_length + segments
        if skpo.conditioning == "skip" and skpo.skip_format == "chat":
            worst_prompt += CHAT_FORMAT_SLACK_TOKENS
    model_len, model_len_key = model_length_limit(config)
    return _WorstCase(
        response_length, prompt_length, dataset_prompt_length, t_max, segments, worst_prompt, model_len, model_len_key
    )


def _segment_fits_response(skpo: SKPOConfig, worst: _WorstCase) -> str | None:
    """Rule 1: t_max <= `actor_rollout_ref.rollout.response_length`: the kept segment is the upstream row's response."""
    if worst.split_length <= worst.response_length:
        return None
    return (
        f"split lengths reach {worst.split_length} tokens (algorithm.skpo.split_high={skpo.split_high:g} x "
        f"algorithm.skpo.tracker.initial_length={skpo.tracker.initial_length:g}), more than "
        f"actor_rollout_ref.rollout.response_length={worst.response_length} (data.max_response_length): the kept "
        f"segment is the upstream row's response. Raise data.max_response_length to at least {worst.split_length}, "
        f"or lower +algorithm.skpo.tracker.initial_length to at most "
        f"{math.floor(worst.response_length / skpo.split_high)}."
    )


def _downstream_prompt_fits(skpo: SKPOConfig, worst: _WorstCase) -> str | None:
    """Rule 2: `data.max_prompt_length` + the kept segments (+ chat slack) <= `actor_rollout_ref.rollout.prompt_length`.

    Every prompt the agent loop emits must fit verl's prompt budget (verl's own agent loops
    left-truncate longer prompts; SKPO refuses to).
    """
    if worst.prompt <= worst.prompt_length:
        return None
    if skpo.num_splits == 1:
        segments = f"+ split length up to {worst.split_length}"
    else:
        segments = (
            f"+ algorithm.skpo.num_splits={skpo.num_splits} segments of up to {worst.split_length} tokens each, "
            f"together at most response_length - 1 = {worst.response_length - 1}: {worst.segments}"
        )
    slack = worst.prompt - worst.dataset_prompt_length > worst.segments
    return (
        f"downstream prompts [s, q] reach {worst.prompt} tokens (data.max_prompt_length={worst.dataset_prompt_length} "
        + segments
        + (f" + {CHAT_FORMAT_SLACK_TOKENS} chat-format slack" if slack else "")
        + f"), more than actor_rollout_ref.rollout.prompt_length={worst.prompt_length} (it defaults to "
        f"data.max_prompt_length). Set actor_rollout_ref.rollout.prompt_length={worst.prompt} (or more). "
        "Keep data.max_prompt_length the budget of the problem alone (the dataset filter): raising it to make "
        "room for the segment raises the worst case with it."
        + (f" Or lower algorithm.skpo.num_splits={skpo.num_splits}." if skpo.num_splits > 1 else "")
    )


def _answer_fits_context(skpo: SKPOConfig, worst: _WorstCase) -> str | None:
    """Rule 3: the longest downstream prompt + response_length <= `actor_rollout_ref.rollout.max_model_len`.

    When that is null, the model's `max_position_embeddings` (`model_length_limit`); skipped
    when neither is known offline.
    """
    if skpo.clamp_answers_to_context or not worst.overflows_context:
        return None
    return (
        f"a downstream prompt plus its answer reaches {worst.sequence} tokens ({worst.prompt} + "
        f"response_length {worst.response_length}), more than {worst.model_len_key}={worst.model_len}; the server "
        f"would clamp answers silently. Set actor_rollout_ref.rollout.max_model_len to at least {worst.sequence}"
        + (" (the model's max_position_embeddings must allow it)" if worst.model_len_key != MAX_MODEL_LEN_KEY else "")
        + f", or set +{CLAMP_KEY}=true to cap answers at the context left after their [s, q]."
    )


def _clamped_answer_fits_context(skpo: SKPOConfig, worst: _WorstCase) -> str | None:
    """Rule 3 with `algorithm.skpo.clamp_answers_to_context`: the longest downstream prompt leaves an answer room.

    Answers may then be capped at the context left after their [s, q], but not at nothing.
    """
    if not skpo.clamp_answers_to_context or not worst.overflows_context or worst.prompt < worst.model_len:
        return None
    return (
        f"downstream prompts [s, q] reach {worst.prompt} tokens, leaving no room for an answer within "
        f"{worst.model_len_key}={worst.model_len} even with {CLAMP_KEY}=true. Lower data.max_prompt_length or "
        "data.max_response_length (the split length follows it), or use a model with a longer context."
    )


# Rule 3 is one of the last two, by clamp_answers_to_context.
_RULES = (_segment_fits_response, _downstream_prompt_fits, _answer_fits_context, _clamped_answer_fits_context)


def _answer_budget(skpo: SKPOConfig, worst: _WorstCase) -> tuple[int, int]:
    """(the longest downstream prompt plus its answer, the smallest answer budget).

    response_length, unless clamp_answers_to_context caps answers at the context the longest
    [s, q] leaves; then that smallest budget is logged.
    """
    if not skpo.clamp_answers_to_context or not worst.overflows_context:
        return worst.sequence, worst.response_length
    min_answer_length = worst.model_len - worst.prompt
    if min_answer_length >= 1:
        logger.warning(
            "%s=true: answers after the longest [s, q] (%d tokens) get %d of response_length %d tokens "
            "(%s=%d); shorter [s, q] leave more.",
            CLAMP_KEY,
            worst.prompt,
            min_answer_length,
            worst.response_length,
            worst.model_len_key,
            worst.model_len,
        )
    return worst.model_len, min_answer_length


def _required(config: Any, key: str) -> Any:
    value = OmegaConf.select(config, key)
    if value is None:
        raise SKPOLengthError(f"{key} is not set; SKPO needs it to size its downstream prompts.")
    return value


def model_length_limit(config: Any) -> tuple[int | None, str]:
    """The longest sequence the rollout server takes, and the setting it comes from.

    `actor_rollout_ref.rollout.max_model_len` when set; when null, verl's vLLM/SGLang servers
    use the model's `max_position_embeddings` (vllm_async_server.py l.1103-1105), read here
    from the model's `config.json` in a local directory or the Hugging Face cache, without
    downloading. (None, "") when neither is available.
    """
    max_model_len = OmegaConf.select(config, MAX_MODEL_LEN_KEY)
    if max_model_len is not None:
        return int(max_model_len), MAX_MODEL_LEN_KEY
    model_path = OmegaConf.select(config, "actor_rollout_ref.model.path")
    embeddings = _max_position_embeddings(str(model_path)) if model_path else None
    if embeddings is None:
        return None, ""
    return embeddings, f"the model's max_position_embeddings ({MAX_MODEL_LEN_KEY} is null)"


def model_eos_token_ids(config: Any, tokenizer: Any) -> list[int]:
    """Every EOS id the model declares, as vLLM gathers them: generation config, model config, tokenizer.

    Read offline from the model directory or the Hugging Face cache; where a file is not
    available (e.g. a remote path), the ids from the others still count.
    """
    model_path = OmegaConf.select(config, "actor_rollout_ref.model.path")
    ids = set()
    sources = [getattr(tokenizer, "eos_token_id", None)]
    if model_path:
        for filename in ("generation_config.json", "config.json"):
            sources.append((_model_json(str(model_path), filename) or {}).get("eos_token_id"))
    for source in sources:
        if source is not None:
            ids.update([source] if isinstance(source, int) else source)
    if not ids:
        raise SKPOLengthError(
            "the model declares no EOS token (tokenizer, generation_config.json and config.json all lack one); "
            "skpo_agent needs it to tell a candidate that ended within t_q from one that was stopped."
        )
    return sorted(int(i) for i in ids)


@functools.lru_cache(maxsize=32)
def _model_json(model_path: str, filename: str) -> dict | None:
    """A JSON file of the model, from a local directory or the Hugging Face cache; None if unavailable."""
    path = os.path.join(model_path, filename)
    if not os.path.isfile(path):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model_path, filename)
        except Exception:  # noqa: BLE001 - not a repo id (e.g. an hdfs:// path): nothing to read offline
            return None
        if not isinstance(cached, str):
            return None
        path = cached
    with open(path) as f:
        return json.load(f)


def _max_position_embeddings(model_path: str) -> int | None:
    hf_config = _model_json(model_path, "config.json")
    if hf_config is None:
        return None
    # As verl's get_max_position_embeddings (workers/rollout/utils.py ~l.31-40): top level, then text_config.
    value = hf_config.get(
        "max_position_embeddings", (hf_config.get("text_config") or {}).get("max_position_embeddings")
    )
    return int(value) if value is not None else None
