"""MMLU-Pro (TIGER-Lab/MMLU-Pro, split "test"): multiple choice with up to ten options.

Public columns: question_id, question, options (list of up to 10 strings), answer (letter),
answer_index, cot_content, category, src. The problem written to the parquet is the question
followed by its lettered options; the ground truth is the answer letter, which must name one of
the row's options and agree with answer_index (otherwise the row is refused as missing_answer:
we cannot tell which of the two is right). Graded by `skpo_verl.evaluation.choice`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from skpo_verl.data_prep.sources import Layout, Source, column

LETTERS = "ABCDEFGHIJ"
PROMPT_TEMPLATE = (
    "Answer the following multiple choice question. Think step by step, then end your response with a "
    "line of the form Answer: $LETTER where $LETTER is the letter of the correct option.\n\n{problem}"
)


def options(row: Mapping[str, Any]) -> list[str] | None:
    values = row.get("options")
    if values is None or isinstance(values, str) or len(values) == 0 or len(values) > len(LETTERS):
        return None
    return [str(value).strip() for value in values]


def mmlu_pro_problem(row: Mapping[str, Any]) -> str | None:
    question, choices = row.get("question"), options(row)
    if not isinstance(question, str) or not question.strip() or choices is None:
        return None
    lines = [f"{letter}. {text}" for letter, text in zip(LETTERS, choices)]
    return question.strip() + "\n\n" + "\n".join(lines)


def mmlu_pro_answer(row: Mapping[str, Any]) -> str | None:
    letter, choices, index = row.get("answer"), options(row), row.get("answer_index")
    if not isinstance(letter, str) or choices is None or letter.strip() not in LETTERS[: len(choices)]:
        return None
    letter = letter.strip()
    if index is not None and int(index) != LETTERS.index(letter):
        return None
    return letter


SOURCE = Source(
    name="mmlu_pro",
    data_source="mmlu_pro",
    split="test",
    hub_id="TIGER-Lab/MMLU-Pro",
    hub_config=None,
    hub_split="test",
    layouts=(
        Layout(
            "TIGER-Lab/MMLU-Pro",
            ("question", "options", "answer", "question_id"),
            mmlu_pro_problem,
            mmlu_pro_answer,
            column("question_id"),
        ),
    ),
    ability="multiple_choice",
    prompt_template=PROMPT_TEMPLATE,
)
