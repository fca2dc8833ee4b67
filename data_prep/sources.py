"""The datasets SKPO's paper trains and evaluates on, and how to read each one's real columns.

Each `Source` names the public dataset (used through `datasets` when no local file is given)
and the column layouts it is published in. A `Layout` lists the columns it needs and small
functions that read the problem, the final answer and the row id out of one raw row; the
converter picks the first layout whose columns the file has. `None` means "missing": the
converter reports it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# DAPO-Math-17k stores each problem already wrapped in this instruction; we unwrap it so
# every source is templated the same way (data_prep.convert.TEMPLATES["dapo"] re-wraps it).
DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be "
    "of the form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'


Reader = Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Layout:
    """One published column layout of a dataset (named after where it is published)."""

    name: str
    columns: tuple[str, ...]  # all must be present for this layout to be chosen
    problem: Reader
    answer: Reader
    row_id: Reader = lambda row: None
    unit: Reader = lambda row: None  # the answer's unit, when the dataset gives one


@dataclass(frozen=True)
class Source:
    name: str
    data_source: str  # the `data_source` column verl routes rewards and metrics by
    split: str  # `extra_info.split`: "train" or "test"
    hub_id: str
    hub_config: str | None
    hub_split: str
    layouts: tuple[Layout, ...]  # the first whose columns are present wins: more specific ones first
    ability: str = "math"
    # The whole user message with a "{problem}" slot; when set it replaces --template (the math
    # templates do not fit multiple-choice or code problems).
    prompt_template: str | None = None

    def detect_layout(self, columns: Sequence[str]) -> Layout:
        """The first layout whose columns are all present; else an error naming what was expected and found."""
        present = set(columns)
        for layout in self.layouts:
            if present.issuperset(layout.columns):
                return layout
        accepted = "; ".join(f"{layout.name}: {', '.join(layout.columns)}" for layout in self.layouts)
        raise ValueError(
            f"the columns found ({', '.join(map(str, columns)) or 'none'}) match no layout of {self.name}; "
            f"expected the columns of one of: {accepted}"
        )


def column(name: str) -> Reader:
    return lambda row: row.get(name)


def is_missing(value: Any) -> bool:
    """None or a float NaN: what pandas puts in a JSON/JSONL cell that is null or absent."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def as_mapping(value: Any) -> Mapping[str, Any] | None:
    """Nested columns arrive as dicts (parquet/json) or JSON strings (csv); null -> None."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    return value if isinstance(value, Mapping) else None


def as_list(value: Any) -> list | None:
    """List columns arrive as lists (json), numpy arrays (parquet) or JSON strings (csv); null -> None."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if is_missing(value) or isinstance(value, (Mapping, str, bytes)) or not hasattr(value, "__len__"):
        return None
    return list(value)


def unwrap_dapo(text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    return text.removeprefix(DAPO_PREFIX).removesuffix(DAPO_SUFFIX)


def dapo_problem(row: Mapping[str, Any]) -> str | None:
    prompt = as_list(row.get("prompt"))
    if not prompt:
        return None
    content = as_mapping(prompt[-1])
    return unwrap_dapo(content.get("content")) if content else None


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
    answers = [answers] if isinstance(answers, str) and not answers.startswith("[") else as_list(answers)
    if not answers:
        return None
    return ", ".join(re.sub(r"^\$+|\$+$", "", str(item).strip()) for item in answers if not is_missing(item))


def olympiad_problem(row: Mapping[str, Any]) -> Any:
    """The question, after its `context` (the shared setting of a multi-part problem) when there is one."""
    question, context = row.get("question"), row.get("context")
    if isinstance(context, str) and context.strip() and isinstance(question, str):
        return f"{context.strip()}\n\n{question}"
    return question


def _gsm8k(split: str) -> Source:
    return Source(
        name=f"gsm8k_{split}",
        data_source="gsm8k",
        split=split,
        hub_id="openai/gsm8k",
        hub_config="main",
        hub_split=split,
        layouts=(Layout("openai/gsm8k", ("question", "answer"), column("question"), gsm8k_answer),),
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
            layouts=(
                # open-r1/DAPO-Math-17k-Processed: `prompt` flattened to the problem text, `solution` the answer.
                Layout(
                    "open-r1/DAPO-Math-17k-Processed",
                    ("prompt", "solution"),
                    lambda row: unwrap_dapo(row.get("prompt")),
                    column("solution"),
                    dapo_row_id,
                ),
                Layout(
                    "BytedTsinghua-SIA/DAPO-Math-17k",
                    ("prompt", "reward_model"),
                    dapo_problem,
                    dapo_answer,
                    dapo_row_id,
                ),
            ),
        ),
        Source(
            name="math500",
            data_source="math500",
            split="test",
            hub_id="HuggingFaceH4/MATH-500",
            hub_config=None,
            hub_split="test",
            layouts=(
                Layout(
                    "HuggingFaceH4/MATH-500",
                    ("problem", "answer"),
                    column("problem"),
                    column("answer"),
                    column("unique_id"),
                ),
            ),
        ),
        Source(
            name="aime2024",
            data_source="aime2024",
            split="test",
            hub_id="Maxwell-Jia/AIME_2024",
            hub_config=None,
            hub_split="train",
            layouts=(
                Layout(
                    "Maxwell-Jia/AIME_2024", ("Problem", "Answer"), column("Problem"), column("Answer"), column("ID")
                ),
                Layout(
                    "HuggingFaceH4/aime_2024", ("problem", "answer"), column("problem"), column("answer"), column("id")
                ),
            ),
        ),
        Source(
            name="aime2025",
            data_source="aime2025",
            split="test",
            hub_id="math-ai/aime25",
            hub_config=None,
            hub_split="test",
            layouts=(
                Layout("math-ai/aime25", ("problem", "answer"), column("problem"), column("answer"), column("id")),
            ),
        ),
        Source(
            name="amc2023",
            data_source="amc2023",
            split="test",
            hub_id="math-ai/amc23",
            hub_config=None,
            hub_split="test",
            layouts=(
                Layout("math-ai/amc23", ("question", "answer"), column("question"), column("answer"), column("id")),
            ),
        ),
        Source(
            name="minerva",
            data_source="minerva",
            split="test",
            hub_id="math-ai/minervamath",
            hub_config=None,
            hub_split="test",
            layouts=(Layout("math-ai/minervamath", ("question", "answer"), column("question"), column("answer")),),
        ),
        Source(
            name="olympiadbench",
            data_source="olympiadbench",
            split="test",
            hub_id="Hothan/OlympiadBench",
            hub_config="OE_TO_maths_en_COMP",
            hub_split="train",
            layouts=(
                Layout(
                    "Hothan/OlympiadBench",
                    ("question", "final_answer"),
                    olympiad_problem,
                    olympiad_answer,
                    column("id"),
                    unit=column("unit"),
                ),
            ),
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
