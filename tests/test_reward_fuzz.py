"""Fuzz: 1,200 random and adversarial responses; the reward never raises, never passes its guard, is ±1.

Responses are generated from a fixed seed (reproducible): random unicode, random LaTeX
fragments, unbalanced and deeply nested braces, huge exponents and towers, scientific
notation, control characters, and a few megabyte-sized ones. Each call uses a 1 s judge
timeout, so its guard is 2 * 1 + 5 = 7 s; the bound below adds 3 s for extracting the
answer from a megabyte of text on a loaded 2-core machine.
"""

import random
import time

import pytest

from skpo_verl.reward.score import compute_score

TIMEOUT_S = 1
GUARD_S = 2 * TIMEOUT_S + 5
BOUND_S = GUARD_S + 3
SEED = 20261201

FRAGMENTS = [
    "\\boxed{",
    "}",
    "{",
    "\\frac{",
    "}{",
    "^{",
    "_{",
    "\\sqrt{",
    "\\left(",
    "\\right)",
    "\\text{",
    "\\mathrm{",
    "$",
    "$$",
    "\\(",
    "\\)",
    "\\[",
    "\\]",
    "Answer:",
    "Final Answer: The final answer is ",
    "\n",
    " ",
    "\\cdot",
    "\\times 10^{",
    "e",
    "E+",
    "-",
    "+",
    "=",
    ",",
    ".",
    "\\pi",
    "\\infty",
    "x",
    "9",
    "0",
    "1",
    "\\\\",
    "\\",
    "\\begin{pmatrix}",
    "\\end{pmatrix}",
    "&",
    "\\{",
    "\\}",
    "[",
    "]",
    "(",
    ")",
    "|",
    "!",
    "%",
    "#",
]
UNICODE = "αβγ∞√∑∫≤≥≠±×÷€£¥😀👍🏽\u200b\u200f\u202e\ufeff\ufffd\u0000\u0007中文字符한국어العربية"


def random_unicode(rng: random.Random) -> str:
    return "".join(rng.choice(UNICODE + "abc123{}\\$ \n") for _ in range(rng.randint(0, 200)))


def random_latex(rng: random.Random) -> str:
    return "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 60)))


def nested_braces(rng: random.Random) -> str:
    depth = rng.randint(1, 3000)
    closing = depth + rng.randint(-3, 3)  # unbalanced on purpose, either way
    return "\\boxed{" + "{" * depth + str(rng.randint(0, 9)) + "}" * max(closing, 0)


def huge_numbers(rng: random.Random) -> str:
    forms = [
        lambda: f"\\boxed{{9^{{9^{{9^{{{rng.randint(9, 99)}}}}}}}}}",
        lambda: f"\\boxed{{10^{{10^{{{rng.randint(10, 10**6)}}}}}}}",
        lambda: f"Answer: {rng.randint(1, 9)}e{rng.randint(-(10**6), 10**6)}",
        lambda: f"\\boxed{{{rng.randint(1, 9)}.{rng.randint(0, 9)}\\times 10^{{{rng.randint(10**5, 10**9)}}}}}",
        lambda: "\\boxed{" + "9" * rng.randint(500, 1900) + "}",
        lambda: f"\\boxed{{{rng.randint(1, 99)}!!!!}}",
    ]
    return rng.choice(forms)()


def megabyte(rng: random.Random) -> str:
    forms = [
        lambda: "x" * 1_000_000 + "\nAnswer: 5",
        lambda: "Answer: " + "1" * 1_000_000,
        lambda: "\\boxed{" * 200_000,
        lambda: "}" * 1_000_000 + "\\boxed{5}",
        lambda: "$" * 1_000_000,
        lambda: "Answer: 7\n" * 100_000,
    ]
    return rng.choice(forms)()


def responses() -> list[str]:
    rng = random.Random(SEED)
    generators = [random_unicode] * 10 + [random_latex] * 10 + [nested_braces] * 2 + [huge_numbers]
    found = [rng.choice(generators)(rng) for _ in range(1194)]
    return found + [megabyte(rng) for _ in range(6)]


def test_fuzzed_responses_score_plus_or_minus_one_within_the_guard():
    texts = responses()
    assert len(texts) >= 1000 and sum(len(text) >= 1_000_000 for text in texts) >= 5
    slowest, reasons = 0.0, set()
    for position, text in enumerate(texts):
        truth = ["5", "\\frac{1}{2}", "4.5e33", "(1, 2)"][position % 4]
        started = time.monotonic()
        result = compute_score("math500", text, truth, None, TIMEOUT_S)
        elapsed = time.monotonic() - started
        assert result["score"] in (1.0, -1.0), (position, result)
        assert elapsed < BOUND_S, (position, text[:200], elapsed)
        slowest = max(slowest, elapsed)
        reasons.add(result["reason"])
    print(f"slowest call {slowest:.2f} s; reasons seen: {sorted(reasons)}")
    # The corpus reaches the judge, not only the extractor: verdicts and timeouts both occur.
    assert {"wrong", "no_answer", "timeout"} <= reasons


@pytest.mark.parametrize("truth", ["}{", "\\boxed{", "9^{9^{9^{9}}}", "😀", "x" * 100_000])
def test_fuzzed_ground_truths_never_raise(truth):
    result = compute_score("math500", "\\boxed{5}", truth, None, TIMEOUT_S)
    assert result["score"] in (1.0, -1.0)
