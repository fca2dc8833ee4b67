"""Multi-step arithmetic word problems, written locally: a real-model task that needs no download.

GSM8K-like short stories (shopping, saving, sharing, rows of chairs, ...), each asking one
whole-number question that takes 2-4 operations (+, -, x, exact /). Every template is a story
with number slots and the arithmetic that answers it; `WordProblemSpec` draws the numbers
(from a seed, within `max_value` and with every intermediate result a positive whole number),
keeps distinct questions and splits them into training and held-out problems. The same spec
gives the same problems on every machine.

Each prompt is the question and one instruction, to end with the sentence `The final answer is N.`,
which the project's reward reads (`skpo_verl.reward.compute_score`: the last `Answer:` line, `final
answer is` sentence or `\\boxed{}`, judged by math-verify, +1 / -1). Why that sentence and not an
`Answer:` line: see INSTRUCTION.

Rows follow verl's RL parquet schema (`data_source`, chat `prompt`, `ability`,
`reward_model={style, ground_truth}`, `extra_info={split, index, template, operations}`);
`extra_info.index` is unique across both splits, because SKPO keys its per-prompt trackers on it.

    python -m skpo_verl.demo.word_problems --output-dir DIR [--train-size N] [--val-size N] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
from collections.abc import Callable
from dataclasses import dataclass

DATA_SOURCE = "skpo_word_problems"
# Measured on SmolLM2-135M-Instruct (docs/real_model.md, "Prompt"): asked for an `Answer: N` line it
# wrote one on 9 of 32 problems (it prefers "The answer is N", which no grader reads), asked for
# \\boxed{} on 7; asked for this sentence, which the project's reward reads as the final answer, it
# ended with it on 39 of 48 and kept its replies short (32 tokens on average); "step by step" in
# the prompt made it ramble past any budget.
INSTRUCTION = "End your reply with 'The final answer is N.'"

NAMES = ("Mia", "Tom", "Ava", "Leo", "Zoe", "Sam", "Ivy", "Max", "Eli", "Ana", "Ben", "Kim")


@dataclass(frozen=True)
class Template:
    """A story with slots {name}, {a}, {b}, ... and the arithmetic that answers it.

    `answer(numbers)` returns the whole-number answer, or None when the drawn numbers make a
    step negative, zero or fractional (the numbers are then drawn again). `ranges` gives each
    number's (low, high) as fractions of `max_value`, so one knob scales every template.
    """

    name: str
    text: str
    operations: int
    ranges: dict[str, tuple[float, float]]
    answer: Callable[[dict[str, int]], int | None]


def _positive(*values: int) -> bool:
    return all(value > 0 for value in values)


def _checked(result: int, *steps: int) -> int | None:
    """result, when it and every intermediate step are positive whole numbers."""
    return result if _positive(result, *steps) else None


def _divides(total: int, parts: int) -> bool:
    return parts > 0 and total % parts == 0


# Each number's range as fractions of max_value (at least 2..5): at max_value 10, SMALL and MEDIUM
# are 2-5 (boxes, days, people, prices), LARGE 3-10, and TOTAL 5-30 (a sum of money, a book's pages,
# a batch of cookies: what the story takes several others away from).
SMALL = (0.1, 0.3)
MEDIUM = (0.1, 0.5)
LARGE = (0.3, 1.0)
TOTAL = (0.5, 3.0)

TEMPLATES = (
    Template(
        "pet_shop",
        "A pet shop has {a} dogs, {b} cats and {c} rabbits. How many animals does the pet shop have?",
        2,
        {"a": MEDIUM, "b": MEDIUM, "c": MEDIUM},
        lambda n: _checked(n["a"] + n["b"] + n["c"]),
    ),
    Template(
        "bus",
        "A bus has {a} people on it. At the first stop {b} people get off and {c} people get on. "
        "How many people are on the bus now?",
        2,
        {"a": LARGE, "b": MEDIUM, "c": MEDIUM},
        lambda n: _checked(n["a"] - n["b"] + n["c"], n["a"] - n["b"]),
    ),
    Template(
        "buy_give",
        "{name} has {a} marbles. {name} buys {b} more marbles and then gives {c} marbles to a friend. "
        "How many marbles does {name} have now?",
        2,
        {"a": MEDIUM, "b": MEDIUM, "c": MEDIUM},
        lambda n: _checked(n["a"] + n["b"] - n["c"]),
    ),
    Template(
        "boxes_used",
        "A box holds {a} crayons. {name} buys {b} boxes and gives away {c} crayons. "
        "How many crayons does {name} have left?",
        2,
        {"a": SMALL, "b": SMALL, "c": MEDIUM},
        lambda n: _checked(n["a"] * n["b"] - n["c"]),
    ),
    Template(
        "change",
        "{name} has {a} dollars and buys {b} notebooks that cost {c} dollars each. "
        "How many dollars does {name} have left?",
        2,
        {"a": TOTAL, "b": SMALL, "c": SMALL},
        lambda n: _checked(n["a"] - n["b"] * n["c"]),
    ),
    Template(
        "two_days_pay",
        "{name} earns {a} dollars per hour. {name} works {b} hours on Monday and {c} hours on Tuesday. "
        "How many dollars does {name} earn on the two days?",
        2,
        {"a": SMALL, "b": SMALL, "c": SMALL},
        lambda n: _checked(n["a"] * (n["b"] + n["c"])),
    ),
    Template(
        "share_eat",
        "{name} bakes {a} cookies and shares them equally among {b} friends. Each friend eats {c} of the cookies. "
        "How many cookies does each friend have left?",
        2,
        {"a": TOTAL, "b": SMALL, "c": SMALL},
        lambda n: _checked(n["a"] // n["b"] - n["c"]) if _divides(n["a"], n["b"]) else None,
    ),
    Template(
        "chairs",
        "A hall has {a} rows of {b} chairs. {c} chairs are taken out and then {d} chairs are brought in. "
        "How many chairs are in the hall now?",
        3,
        {"a": SMALL, "b": SMALL, "c": MEDIUM, "d": MEDIUM},
        lambda n: _checked(n["a"] * n["b"] - n["c"] + n["d"], n["a"] * n["b"] - n["c"]),
    ),
    Template(
        "reading",
        "A book has {d} pages. {name} reads {a} pages a day for {b} days and then {c} more pages. "
        "How many pages are left to read?",
        3,
        {"a": SMALL, "b": SMALL, "c": MEDIUM, "d": TOTAL},
        lambda n: _checked(n["d"] - (n["a"] * n["b"] + n["c"])),
    ),
    Template(
        "savings",
        "{name} saves {a} dollars every week for {b} weeks, then spends {c} dollars on a game and gets {d} dollars "
        "as a gift. How many dollars does {name} have now?",
        4,
        {"a": SMALL, "b": SMALL, "c": MEDIUM, "d": MEDIUM},
        lambda n: _checked(n["a"] * n["b"] - n["c"] + n["d"], n["a"] * n["b"] - n["c"]),
    ),
    Template(
        "fruit_bags",
        "{name} picks {a} apples and {b} pears and puts them into bags of {c} fruits each. "
        "{name} gives {d} bags away. How many bags does {name} keep?",
        4,
        {"a": LARGE, "b": LARGE, "c": SMALL, "d": SMALL},
        lambda n: _checked((n["a"] + n["b"]) // n["c"] - n["d"]) if _divides(n["a"] + n["b"], n["c"]) else None,
    ),
    Template(
        "tickets",
        "Adult tickets cost {a} dollars and child tickets cost {b} dollars. A family buys {c} adult tickets and "
        "{d} child tickets. How many dollars do they pay?",
        3,
        {"a": SMALL, "b": SMALL, "c": SMALL, "d": SMALL},
        lambda n: _checked(n["a"] * n["c"] + n["b"] * n["d"]),
    ),
)


@dataclass(frozen=True)
class WordProblemSpec:
    train_size: int = 256
    val_size: int = 64
    max_value: int = 10  # the difficulty knob: numbers scale with it (template ranges)
    seed: int = 0
    instruction: str = INSTRUCTION

    def __post_init__(self):
        if self.train_size < 1 or self.val_size < 1:
            raise ValueError(f"WordProblemSpec needs train_size and val_size >= 1, got {self}")
        if self.max_value < 10:
            raise ValueError(f"WordProblemSpec.max_value must be >= 10 (numbers scale with it), got {self.max_value}")


@dataclass(frozen=True)
class Problem:
    template: str
    operations: int
    question: str
    answer: int
    numbers: tuple[tuple[str, int], ...]  # (slot, value): two problems differing only in the name are one


def _draw(template: Template, rng: random.Random, max_value: int) -> Problem | None:
    numbers = {
        slot: rng.randint(max(2, round(low * max_value)), max(5, round(high * max_value)))
        for slot, (low, high) in template.ranges.items()
    }
    result = template.answer(numbers)
    if result is None:
        return None
    question = template.text.format(name=rng.choice(NAMES), **numbers)
    return Problem(template.name, template.operations, question, result, tuple(sorted(numbers.items())))


def problems(spec: WordProblemSpec) -> tuple[list[Problem], list[Problem]]:
    """(train, held-out): distinct problems (template and numbers; the name does not count), each from a
    template drawn at random, numbers from the spec's seed. Templates with few distinct problems at a small
    `max_value` (exact division) run out and appear less often."""
    rng = random.Random(spec.seed)
    wanted = spec.train_size + spec.val_size
    seen, drawn = set(), []
    attempts = 0
    while len(drawn) < wanted:
        attempts += 1
        if attempts > 200 * wanted:
            raise ValueError(f"could not draw {wanted} distinct problems with max_value={spec.max_value}; raise it")
        problem = _draw(rng.choice(TEMPLATES), rng, spec.max_value)
        if problem is not None and (problem.template, problem.numbers) not in seen:
            seen.add((problem.template, problem.numbers))
            drawn.append(problem)
    rng.shuffle(drawn)
    return drawn[spec.val_size :], drawn[: spec.val_size]


def prompt_text(problem: Problem, spec: WordProblemSpec) -> str:
    return f"{problem.question}\n{spec.instruction}"


def build_rows(split: str, chosen: list[Problem], spec: WordProblemSpec, first_index: int) -> list[dict]:
    return [
        {
            "data_source": DATA_SOURCE,
            "prompt": [{"role": "user", "content": prompt_text(problem, spec)}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(problem.answer)},
            "extra_info": {
                "split": split,
                "index": first_index + offset,
                "template": problem.template,
                "operations": problem.operations,
            },
        }
        for offset, problem in enumerate(chosen)
    ]


def write_dataset(directory: str, spec: WordProblemSpec = WordProblemSpec()) -> tuple[str, str]:
    """Write train.parquet and val.parquet (held-out) for `spec`; return their paths."""
    import pandas as pd

    os.makedirs(directory, exist_ok=True)
    train_problems, val_problems = problems(spec)
    train = build_rows("train", train_problems, spec, first_index=0)
    val = build_rows("val", val_problems, spec, first_index=len(train))
    paths = (os.path.join(directory, "train.parquet"), os.path.join(directory, "val.parquet"))
    for rows, path in zip((train, val), paths):
        pd.DataFrame(rows).to_parquet(path, index=False)
    return paths


def main(argv=None) -> None:
    defaults = WordProblemSpec()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--train-size", type=int, default=defaults.train_size)
    parser.add_argument("--val-size", type=int, default=defaults.val_size)
    parser.add_argument("--max-value", type=int, default=defaults.max_value)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    spec = WordProblemSpec(args.train_size, args.val_size, args.max_value, args.seed)
    train_file, val_file = write_dataset(args.output_dir, spec)
    print(f"TRAIN_FILE={shlex.quote(train_file)}")
    print(f"VAL_FILE={shlex.quote(val_file)}")


if __name__ == "__main__":
    main()
