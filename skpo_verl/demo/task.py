"""The embedded default task, "chain sums": add a few numbers step by step, end with `Answer: n`.

A prompt such as `Add 3, 5, 4.` is answered by a worked solution, one partial sum per step:
`3+5=8. 8+4=12.\nAnswer: 12` (the answer on its own line, where the reward looks for it). The
answer is judged by the project's own reward (`skpo_verl.reward.compute_score`: the `Answer:`
line, math-verify equivalence, +1 / -1), so the demo exercises the reward every real run uses.

The worked prefix matters: every later step builds on the first partial sum, so a response
whose first step is wrong ends wrong. That is the situation SKPO is built for: its kept
segment (the first t_q tokens) holds that first step, and the upstream advantage says whether
it helped. With more terms a slip can happen at any step (`worked_solution`'s `slips`), so the
decisive error is sometimes inside the kept segment and sometimes after it.

`TaskSpec` is the difficulty knob (number of terms, largest operand, held-out and training
sizes) with a fixed seed; `problems(spec)` gives the same train / held-out split for the same
spec on every machine, and the held-out problems are operand tuples never seen in training.

Rows follow verl's RL parquet schema (`data_source`, chat `prompt`, `ability`,
`reward_model={style, ground_truth}`, `extra_info={split, index}`); `extra_info.index` is
unique across both splits, because SKPO keys its per-prompt trackers on it.
"""

from __future__ import annotations

import itertools
import os
import random
import re
from dataclasses import dataclass

DATA_SOURCE = "skpo_tiny/chain_sum"


@dataclass(frozen=True)
class TaskSpec:
    terms: int = 3  # numbers to add: terms - 1 worked steps
    max_operand: int = 4  # operands are drawn from 1..max_operand
    val_size: int = 16  # held-out problems
    seed: int = 0
    # Training problems: None = every operand tuple not held out; a number takes that many of
    # them (in the spec's shuffled order), so that a large space of tuples still gives a
    # training set small enough for prompts to return to SKPO's per-prompt trackers.
    train_size: int | None = None

    def __post_init__(self):
        if self.terms < 2 or self.max_operand < 1:
            raise ValueError(f"TaskSpec needs terms >= 2 and max_operand >= 1, got {self}")
        if not 0 < self.val_size < self.max_operand**self.terms:
            raise ValueError(
                f"TaskSpec.val_size={self.val_size} must leave training problems out of "
                f"{self.max_operand**self.terms} operand tuples"
            )
        if self.train_size is not None and not 0 < self.train_size <= self.max_operand**self.terms - self.val_size:
            raise ValueError(
                f"TaskSpec.train_size={self.train_size} must be between 1 and the "
                f"{self.max_operand**self.terms - self.val_size} tuples not held out (or None for all of them)"
            )


def prompt_text(operands: tuple[int, ...]) -> str:
    return "Add " + ", ".join(str(x) for x in operands) + "."


def worked_solution(operands: tuple[int, ...], first_step_slip: int = 0, slips: tuple[int, ...] | None = None) -> str:
    """`a+b=s1. s1+c=s2.` then the line `Answer: s2`; `first_step_slip` is added to the first partial sum (a
    careless solver's error) and carried through the later steps. `slips`, one per step, instead adds
    `slips[k]` to step k's partial sum (each carried through), for slips at any step."""
    if slips is None:
        slips = (first_step_slip,) + (0,) * (len(operands) - 2)
    elif len(slips) != len(operands) - 1:
        raise ValueError(f"{len(operands)} operands have {len(operands) - 1} steps, got {len(slips)} slips")
    total = operands[0]
    steps = []
    for operand, slip in zip(operands[1:], slips):
        result = total + operand + slip
        steps.append(f"{total}+{operand}={result}.")
        total = result
    return " ".join(steps) + f"\nAnswer: {total}"


def carries(operands: tuple[int, ...]) -> list[bool]:
    """For each step of the right solution, whether its partial sum crosses a multiple of ten
    (`8+4=12` does, `12+5=17` does not): where the `long` task's careless solver slips."""
    total, out = operands[0], []
    for operand in operands[1:]:
        out.append((total % 10) + operand >= 10)
        total += operand
    return out


_PROBLEM = re.compile(r"Add (\d+(?:, \d+)+)\.")
_STEP = re.compile(r"\s*(\d+)\+(\d+)=(\d+)\.")


def segment_is_clean(prompt: str, segment: str) -> bool:
    """Whether every completed step of a kept segment is right: the chain-sum tasks' segment judge
    (`algorithm.skpo.segment_judge=skpo_verl.demo.task:segment_is_clean`).

    A step is completed once its period is written (`13+9=22.`); step k is right when it reads
    `P_k+x_{k+1}=P_{k+1}.` with the true partial sums P of the problem in `prompt` (`Add 8, 5, 9.`,
    found anywhere in the text, so a chat template around it does not matter). Text after the last
    completed step is not judged: `13+9=2` may still become 22. A segment with no completed step is
    clean (nothing in it is wrong yet); one whose text is not a sequence of steps is not.

    Raises:
        ValueError: `prompt` holds no chain-sum problem (the judge is for these tasks only).
    """
    found = _PROBLEM.search(prompt)
    if found is None:
        raise ValueError(
            f"segment_is_clean judges chain-sum problems ('Add 3, 5, 4.'); the prompt {prompt[:80]!r} holds none. "
            "Unset algorithm.skpo.segment_judge for other tasks."
        )
    operands = [int(x) for x in found.group(1).split(", ")]
    completed = segment[: segment.rfind(".") + 1]
    total, position = operands[0], 0
    for operand in operands[1:]:
        step = _STEP.match(completed, position)
        if step is None:
            break
        if tuple(int(x) for x in step.groups()) != (total, operand, total + operand):
            return False
        total, position = total + operand, step.end()
    return completed[position:].strip() == ""


def answer(operands: tuple[int, ...]) -> int:
    return sum(operands)


def problems(spec: TaskSpec) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """(train, held-out) operand tuples: every tuple once, shuffled by the spec's seed."""
    every = list(itertools.product(range(1, spec.max_operand + 1), repeat=spec.terms))
    random.Random(spec.seed).shuffle(every)
    end = None if spec.train_size is None else spec.val_size + spec.train_size
    return every[spec.val_size : end], every[: spec.val_size]


def build_rows(split: str, operand_tuples: list[tuple[int, ...]], first_index: int) -> list[dict]:
    return [
        {
            "data_source": DATA_SOURCE,
            "prompt": [{"role": "user", "content": prompt_text(operands)}],
            "ability": "arithmetic",
            "reward_model": {"style": "rule", "ground_truth": str(answer(operands))},
            "extra_info": {"split": split, "index": first_index + offset},
        }
        for offset, operands in enumerate(operand_tuples)
    ]


def write_dataset(directory: str, spec: TaskSpec = TaskSpec()) -> tuple[str, str]:
    """Write train.parquet and val.parquet (held-out) for `spec`; return their paths."""
    import pandas as pd

    os.makedirs(directory, exist_ok=True)
    train_problems, val_problems = problems(spec)
    train = build_rows("train", train_problems, first_index=0)
    val = build_rows("val", val_problems, first_index=len(train))
    paths = (os.path.join(directory, "train.parquet"), os.path.join(directory, "val.parquet"))
    for rows, path in zip((train, val), paths):
        pd.DataFrame(rows).to_parquet(path, index=False)
    return paths
