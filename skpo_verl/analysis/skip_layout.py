"""Where the skip connection [s, q] puts the segment s in a chat model's input, per `skip_format`.

verl renders the problem q through the model's chat template with its own Continuous Token
builder (`verl.utils.tokenizer.continuous_token_wiring.create_continuous_token_builder`, the
builder the agent loop's `build_initial_tokens` uses). The agent loop then builds [s, q]:
- `skip_format=tokens`: s's token ids, then q's ids exactly as verl templated them;
- `skip_format=chat`: the decoded s, `CHAT_SEPARATOR`, then the problem as the last user turn's
  text, re-templated by the same builder.
This module builds both for a tokenizer and lists the landmarks in order (`skpo-analyze
skip-layout --tokenizer PATH`): where s starts and ends against the BOS token, every chat
header the template writes, and the problem.
"""

from __future__ import annotations

from collections.abc import Sequence

from skpo_verl.rollout.lengths import CHAT_SEPARATOR

SKIP_FORMATS = ("tokens", "chat")


def find(sequence: Sequence[int], part: Sequence[int], start: int = 0) -> int:
    """The first index >= start where `part` occurs in `sequence` as a contiguous run, or -1."""
    width = len(part)
    for i in range(start, len(sequence) - width + 1):
        if list(sequence[i : i + width]) == list(part):
            return i
    return -1


def downstream_inputs(tokenizer, messages: list[dict], segment: str, model_type: str | None = None) -> dict:
    """{"prompt": q's ids, "segment": s's ids, "tokens": [s, q] as skip_format=tokens, "chat": as skip_format=chat}."""
    from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

    builder = create_continuous_token_builder(tokenizer, hf_model_type=model_type)
    prompt = list(builder.build_initial_tokens(messages))
    segment_ids = list(tokenizer(segment, add_special_tokens=False)["input_ids"])
    users = [i for i, message in enumerate(messages) if message.get("role") == "user"]
    if not users:
        raise ValueError("skip_format=chat needs a user turn to put the segment in.")
    rewritten = [dict(message) for message in messages]
    decoded = tokenizer.decode(segment_ids, skip_special_tokens=True)
    rewritten[users[-1]]["content"] = decoded + CHAT_SEPARATOR + messages[users[-1]]["content"]
    return {
        "prompt": prompt,
        "segment": segment_ids,
        "tokens": segment_ids + prompt,
        "chat": list(builder.build_initial_tokens(rewritten)),
    }


def landmarks(tokenizer, ids: Sequence[int], segment: str, problem: str) -> list[tuple[int, str]]:
    """(token index, what is there), in order: every special token (a header with its role), and where the
    segment's and the problem's texts start and end.

    Texts are located in the decoded input, so a template that trims them still places them; one
    the template changed beyond a trim is reported as not found.
    """
    specials = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    found: list[tuple[int, str]] = []
    for index, token in enumerate(ids):
        if token not in specials:
            continue
        name = tokenizer.convert_ids_to_tokens(int(token))
        if name.endswith("start_header_id|>"):
            close = next((j for j in range(index + 1, len(ids)) if ids[j] in specials), len(ids))
            name += f" ({tokenizer.decode(ids[index + 1 : close])})"
        found.append((index, name))
    text = tokenizer.decode(ids)
    ends = [len(tokenizer.decode(ids[: i + 1])) for i in range(len(ids))]
    for label, needle in (("segment s", segment.strip()), ("problem q", problem.strip())):
        position = text.find(needle) if needle else -1
        if position < 0:
            found.append((-1, f"{label}: not in the input verbatim (the template changed it)"))
            continue
        first = next(i for i, end in enumerate(ends) if end > position)
        last = next(i for i, end in enumerate(ends) if end >= position + len(needle))
        found += [(first, f"{label} starts"), (last, f"{label} ends")]
    return sorted(found, key=lambda item: item[0])


def describe(tokenizer, messages: list[dict], segment: str, model_type: str | None = None) -> str:
    """A report of both layouts: one line per landmark, for each skip_format."""
    inputs = downstream_inputs(tokenizer, messages, segment, model_type)
    problem = str([m for m in messages if m.get("role") == "user"][-1]["content"])
    lines = []
    for skip_format in SKIP_FORMATS:
        ids = inputs[skip_format]
        lines.append(f"skip_format={skip_format}: {len(ids)} tokens")
        lines += [f"  {index:5d}  {what}" for index, what in landmarks(tokenizer, ids, segment, problem)]
    return "\n".join(lines)
