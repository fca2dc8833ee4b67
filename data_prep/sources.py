"""The datasets SKPO's paper trains and evaluates on, and how to read each one's real columns.

Each `Source` names the public dataset (used through `datasets` when no local file is given)
and two small functions that read the problem and the final answer out of one raw row, in
the column layout of that public dataset. `None` means "missing": the converter reports it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

# DAPO-Math-17k stores each problem already wrapped in this instruction; we unwrap it so
# every source is templated the same way (data_prep.convert.TEMPLATES["dapo"] re-wraps it).
DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be "
    "of the form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'


@dataclass(frozen=True)
class Source:
    name: str
    data_source: str  # the `data_source` column verl routes rewards and metrics by
    split: str  # `extra_info.split`: "train" or "test"
    hub_id: str
    hub_config: str | None
    hub_split: str
    problem: Callable[[Mapping[str, Any]], Any]
    answer: Callable[[Mapping[str, Any]], Any]
    row_id: Callable[[Mapping[str, Any]], Any]
    ability: str = "math"
    # The whole user message with a "{problem}" slot; when set it replaces --template (the math
    # templates do not fit multiple-choice or code problems).
    prompt_template: str | None = None


def column(name: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda row: row.get(name)


def as_mapping(value: Any) -> Mapping[str, Any] | None:
    """Nested columns arrive as dicts (parquet/json) or JSON strings (csv)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    return value if isinstance(value, Mapping) else None


def dapo_problem(row: Mapping[str, Any]) -> str | None:
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        try:
            prompt = json.loads(prompt)
        except json.JSONDecodeError:
            return None
    if prompt is None or len(prompt) == 0:
        return None
    content = as_mapping(prompt[-1])
    text = content.get("content") if content else None
    if not isinstance(text, str):
        return None
    return text.removeprefix(DAPO_PREFIX).removesuffix(DAPO_SUFFIX)


def dapo_answer(row: Mapping[str, Any]) -> Any:
    reward_model = as_mapping(row.get("reward_model"))
    return reward_model.get("ground_truth") if reward_model else None


def dapo_row_id(row: Mapping[str, Any]) -> Any:
    extra_info = as_mapping(row.get("extra_info"))
    return extra_info.get("index") if extra_info else None


def gsm8k_answer(row: Mapping[str, Any]) -> str | None:
    """GSM8K's `answer` is a worked solution ending in `#### 42`; the number after #### is the answer."""
    solution = row.get("answer")
    if not isinstance(solution, str) or "####" not in solution:
        return None
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


def olympiad_answer(row: Mapping[str, Any]) -> str | None:
    """OlympiadBench's `final_answer` is a list of LaTeX strings (several when is_multiple_answer)."""
    answers = row.get("final_answer")
    if isinstance(answers, str):
        answers = [answers]
    if answers is None or len(answers) == 0:
        return None
    return ", ".join(re.sub(r"^\$+|\$+$", "", str(item).strip()) for item in answers)


def _gsm8k(split: str) -> Source:
    return Source(
        name=f"gsm8k_{split}",
        data_source="gsm8k",
        split=split,
        hub_id="openai/gsm8k",
        hub_config="main",
        hub_split=split,
        problem=column("question"),
        answer=gsm8k_answer,
        row_id=lambda row: None,
    )


SOURCES: dict[str, Source] = {
    source.name: source
    for source in (
        Source(
            name="dapo_math",
            data_source="math_dapo",
            split="train",
            hub_id="BytedTsinghua-SIA/DAPO-Math-17k",
            hub_config=None,
            hub_split="train",
            problem=dapo_problem,
            answer=dapo_answer,
            row_id=dapo_row_id,
        ),
        Source(
            name="math500",
            data_source="math500",
            split="test",
            hub_id="HuggingFaceH4/MATH-500",
            hub_config=None,
            hub_split="test",
            problem=column("problem"),
            answer=column("answer"),
            row_id=column("unique_id"),
        ),
        Source(
            name="aime2024",
            data_source="aime2024",
            split="test",
            hub_id="Maxwell-Jia/AIME_2024",
            hub_config=None,
            hub_split="train",
            problem=column("Problem"),
            answer=column("Answer"),
            row_id=column("ID"),
        ),
        Source(
            name="aime2025",
            data_source="aime2025",
            split="test",
            hub_id="math-ai/aime25",
            hub_config=None,
            hub_split="test",
            problem=column("problem"),
            answer=column("answer"),
            row_id=column("id"),
        ),
        Source(
            name="amc2023",
            data_source="amc2023",
            split="test",
            hub_id="math-ai/amc23",
            hub_config=None,
            hub_split="test",
            problem=column("question"),
            answer=column("answer"),
            row_id=column("id"),
        ),
        Source(
            name="minerva",
            data_source="minerva",
            split="test",
            hub_id="math-ai/minervamath",
            hub_config=None,
            hub_split="test",
            problem=column("question"),
            answer=column("answer"),
            row_id=lambda row: None,
        ),
        Source(
            name="olympiadbench",
            data_source="olympiadbench",
            split="test",
            hub_id="Hothan/OlympiadBench",
            hub_config="OE_TO_maths_en_COMP",
            hub_split="train",
            problem=column("question"),
            answer=olympiad_answer,
            row_id=column("id"),
        ),
        _gsm8k("train"),
        _gsm8k("test"),
    )
}

# Evaluation-only benchmarks, each in its own module (they build on Source above).
from skpo_verl.data_prep import livecodebench, mmlu_pro  # noqa: E402

SOURCES.update({source.name: source for source in (mmlu_pro.SOURCE, livecodebench.SOURCE)})


def get_source(name: str) -> Source:
    if name not in SOURCES:
        raise ValueError(f"Unknown source {name!r}; choose one of: {', '.join(SOURCES)}.")
    return SOURCES[name]
