"""MMLU-Pro grading: the letter (A-J) a response chose, compared with the answer letter.

Extraction, first match wins:
1. the response's final answer as the SKPO reward reads it (last `\\boxed{}` or `Answer:` line,
   `skpo_verl.reward.score.extract_final_answer`), when it is one letter, optionally in
   parentheses or followed by a period or the option text ("C", "(C)", "C. 42");
2. MMLU-Pro's own patterns: the last "answer is (C)" / "answer is C", then the last "Answer: C".
MMLU-Pro's reference script has a third fallback, the last standalone capital A-J anywhere in the
response; it is not used here because it reads the pronoun "I" or the article "A" as a choice.
A response with no extracted letter is wrong (reason "no_choice").
"""

from __future__ import annotations

import re

from skpo_verl.reward.score import extract_final_answer

LETTERS = "ABCDEFGHIJ"
_LETTER_ALONE = re.compile(rf"^\(?([{LETTERS}])\)?(?:[.:)]\s.*|[.:)])?$", re.DOTALL)
_ANSWER_IS = re.compile(rf"answer is:?\s*\(?([{LETTERS}])\)?")
_ANSWER_COLON = re.compile(rf"[aA]nswer:\s*\(?([{LETTERS}])\)?")


def extract_choice(response: str) -> str | None:
    """The chosen letter, or None when the response names none."""
    final = extract_final_answer(response)
    if final is not None:
        alone = _LETTER_ALONE.match(final.strip())
        if alone:
            return alone.group(1)
    for pattern in (_ANSWER_IS, _ANSWER_COLON):
        found = pattern.findall(response)
        if found:
            return found[-1]
    return None


def judge_choice(response: str, answer_letter: str) -> dict:
    """{"acc": 1.0/0.0, "pred": letter or "", "reason"} in the reward's vocabulary."""
    if answer_letter not in tuple(LETTERS):
        raise ValueError(
            f"MMLU-Pro ground truth must be one letter A-J, got {answer_letter!r}; re-run skpo-prepare-data."
        )
    choice = extract_choice(response or "")
    if choice is None:
        return {"acc": 0.0, "pred": "", "reason": "no_choice"}
    correct = choice == answer_letter
    return {"acc": float(correct), "pred": choice, "reason": "correct" if correct else "wrong"}
