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

    Checks, for the full verl config (a DictConfig as `main_ppo` composes it):
    1. t_max <= `actor_rollout_ref.rollout.response_length`: the kept segment is the
       upstream row's response;
    2. `data.max_prompt_length` + t_max (+ chat slack) <= `actor_rollout_ref.rollout.prompt_length`;
       with K = `algorithm.skpo.num_splits` > 1 segments, min(K x t_max, response_length - 1)
       instead of t_max (the stage rule keeps the kept segments under response_length): every
       prompt the agent loop emits must fit verl's prompt budget (verl's own agent loops
       left-truncate longer prompts; SKPO refuses to);
    3. worst downstream prompt + response_length <= `actor_rollout_ref.rollout.max_model_len`
       (or, when that is null, the model's `max_position_embeddings`: `model_length_limit`;
       skipped when neither is known offline). With `algorithm.skpo.clamp_answers_to_context`
       the answers may be capped instead, as long as the worst [s, q] leaves room for one
       token; the smallest answer budget is logged as a warning.
    """
    skpo = skpo_config_from_algorithm(OmegaConf.select(config, "algorithm"))
    response_length = int(_required(config, "actor_rollout_ref.rollout.response_length"))
    prompt_length = int(_required(config, "actor_rollout_ref.rollout.prompt_length"))
    dataset_prompt_length = int(_required(config, "data.max_prompt_length"))

    t_max = max_split_length(skpo, response_length)
    problems = []
    if t_max > response_length:
        problems.append(
            f"split lengths reach {t_max} tokens (algorithm.skpo.split_high={skpo.split_high:g} x "
            f"algorithm.skpo.tracker.initial_length={skpo.tracker.initial_length:g}), more than "
            f"actor_rollout_ref.rollout.response_length={response_length} (data.max_response_length): the kept "
            f"segment is the upstream row's response. Raise data.max_response_length to at least {t_max}, or "
            f"lower +algorithm.skpo.tracker.initial_length to at most {math.floor(response_length / skpo.split_high)}."
        )

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
    if worst_prompt > prompt_length:
        problems.append(
            f"downstream prompts [s, q] reach {worst_prompt} tokens (data.max_prompt_length={dataset_prompt_length} "
            + (
                f"+ split length up to {t_max}"
                if skpo.num_splits == 1
                else f"+ algorithm.skpo.num_splits={skpo.num_splits} segments of up to {t_max} tokens each, "
                f"together at most response_length - 1 = {response_length - 1}: {segments}"
            )
            + (
                f" + {CHAT_FORMAT_SLACK_TOKENS} chat-format slack"
                if worst_prompt - dataset_prompt_length > segments
                else ""
            )
            + f"), more than actor_rollout_ref.rollout.prompt_length={prompt_length} (it defaults to "
            f"data.max_prompt_length). Set actor_rollout_ref.rollout.prompt_length={worst_prompt} (or more). "
            "Keep data.max_prompt_length the budget of the problem alone (the dataset filter): raising it to make "
            "room for the segment raises the worst case with it."
            + (f" Or lower algorithm.skpo.num_splits={skpo.num_splits}." if skpo.num_splits > 1 else "")
        )

    max_sequence = worst_prompt + response_length
    min_answer_length = response_length
    model_len, model_len_key = model_length_limit(config)
    if model_len is not None and max_sequence > model_len and skpo.clamp_answers_to_context:
        min_answer_length = model_len - worst_prompt
        max_sequence = model_len
        if min_answer_length < 1:
            problems.append(
                f"downstream prompts [s, q] reach {worst_prompt} tokens, leaving no room for an answer within "
                f"{model_len_key}={model_len} even with {CLAMP_KEY}=true. Lower data.max_prompt_length or "
                "data.max_response_length (the split length follows it), or use a model with a longer context."
            )
        else:
            logger.warning(
                "%s=true: answers after the longest [s, q] (%d tokens) get %d of response_length %d tokens "
                "(%s=%d); shorter [s, q] leave more.",
                CLAMP_KEY,
                worst_prompt,
                min_answer_length,
                response_length,
                model_len_key,
                model_len,
            )
    elif model_len is not None and max_sequence > model_len:
        problems.append(
            f"a downstream prompt plus its answer reaches {max_sequence} tokens ({worst_prompt} + "
            f"response_length {response_length}), more than {model_len_key}={model_len}; the server would clamp "
            f"answers silently. Set actor_rollout_ref.rollout.max_model_len to at least {max_sequence}"
            + (" (the model's max_position_embeddings must allow it)" if model_len_key != MAX_MODEL_LEN_KEY else "")
            + f", or set +{CLAMP_KEY}=true to cap answers at the context left after their [s, q]."
        )
    if problems:
        raise SKPOLengthError(
            "SKPO's rollout lengths do not fit the config:\n  - " + "\n  - ".join(problems), tuple(problems)
        )
    return LengthBudget(
        max_split_length=t_max,
        max_downstream_prompt=worst_prompt,
        max_sequence=max_sequence,
        min_answer_length=min_answer_length,
    )


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
