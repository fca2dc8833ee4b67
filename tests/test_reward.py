"""The ±1 reward against hand-labelled responses from every source, in threads, never raising."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from skpo_verl.reward.score import compute_score, extract_final_answer, ground_truth_text

DAPO_TAIL = "Let me work it out.\n...\nAnswer: {}"

# (data_source, response, ground truth, expected score, expected reason) — labelled by hand.
CASES = [
    # DAPO-Math-17k: "Answer:" lines.
    ("math_dapo", "So the total is 34.\nAnswer: 34", "34", 1, "correct"),
    ("math_dapo", "Answer: 35", "34", -1, "wrong"),
    ("math_dapo", DAPO_TAIL.format("$\\frac{3}{4}$"), "\\frac{3}{4}", 1, "correct"),
    ("math_dapo", DAPO_TAIL.format("0.75"), "\\frac{3}{4}", 1, "correct"),
    ("math_dapo", DAPO_TAIL.format("3/4"), "\\frac{3}{4}", 1, "correct"),
    ("math_dapo", "**Answer:** 12", "12", 1, "correct"),
    ("math_dapo", "answer: 2\\sqrt{2}", "\\sqrt{8}", 1, "correct"),
    ("math_dapo", "Answer: 34.", "34", 1, "correct"),
    ("math_dapo", "Answer: 7\nWait, I made an error.\nAnswer: 8", "8", 1, "correct"),
    ("math_dapo", "Answer: 8\nWait, I made an error.\nAnswer: 7", "8", -1, "wrong"),
    ("math_dapo", "I think it is 34 but I'm not sure.", "34", -1, "no_answer"),
    # MATH-500: boxed answers, LaTeX equivalences.
    ("math500", "Thus $\\boxed{\\frac{14}{3}}$.", "\\frac{14}{3}", 1, "correct"),
    ("math500", "Thus $\\boxed{\\dfrac{14}{3}}$.", "\\frac{14}{3}", 1, "correct"),
    ("math500", "Thus $\\boxed{4\\frac{2}{3}}$ is wrong form", "\\frac{14}{3}", 1, "correct"),
    ("math500", "So $\\boxed{(3,\\pi/2)}$.", "(3, \\frac{\\pi}{2})", 1, "correct"),
    ("math500", "So $\\boxed{(3,\\pi)}$.", "(3, \\frac{\\pi}{2})", -1, "wrong"),
    ("math500", "The answer is $\\boxed{\\text{(C)}}$", "\\text{(C)}", 1, "correct"),
    ("math500", "The answer is $\\boxed{C}$", "\\text{(C)}", 1, "correct"),
    ("math500", "The answer is $\\boxed{D}$", "\\text{(C)}", -1, "wrong"),
    ("math500", "We get $\\boxed{x^2+1}$", "1 + x^2", 1, "correct"),
    ("math500", "We get $\\boxed{x = 3}$", "3", 1, "correct"),
    ("math500", "The interval is $\\boxed{[2, 5)}$", "[2,5)", 1, "correct"),
    ("math500", "The interval is $\\boxed{(2, 5)}$", "[2,5)", -1, "wrong"),
    ("math500", "Area is $\\boxed{\\frac{\\sqrt{2}}{2}}$", "\\frac{1}{\\sqrt{2}}", 1, "correct"),
    ("math500", "First \\boxed{1} then finally \\boxed{2}", "2", 1, "correct"),
    ("math500", "It equals \\boxed{\\frac{1}{2}", "\\frac12", -1, "no_answer"),
    # AIME / AMC: integers (AMC ground truth stored as 27.0 upstream).
    ("aime2024", "Hence $xy = \\boxed{025}$.", "25", 1, "correct"),
    ("aime2024", "Hence $xy = \\boxed{24}$.", "25", -1, "wrong"),
    ("aime2025", "The sum of bases is $\\boxed{70}$", "70", 1, "correct"),
    ("amc2023", "They meet $\\boxed{27}$ miles from A.", 27.0, 1, "correct"),
    ("amc2023", "They meet $\\boxed{27.0}$ miles from A.", "27", 1, "correct"),
    ("amc2023", "Final Answer: The final answer is $27$. I hope it is correct.", "27", 1, "correct"),
    # Minerva: decimals and units.
    ("minerva", "The resolution is about $\\boxed{0.49}$ arcseconds.", "0.49", 1, "correct"),
    ("minerva", "The resolution is about $\\boxed{0.49 \\text{ arcsec}}$.", "0.49", 1, "correct"),
    ("minerva", "The resolution is about $\\boxed{0.5}$ arcseconds.", "0.49", -1, "wrong"),
    # Minerva: scientific notation, both directions and LaTeX forms.
    ("minerva", "The energy is $\\boxed{4.5e33}$ erg.", "4.5 \\times 10^{33}", 1, "correct"),
    ("minerva", "The energy is $\\boxed{4.5 \\times 10^{33}}$ erg.", "4.5e33", 1, "correct"),
    ("minerva", "The energy is $\\boxed{4.5\\cdot10^{33}}$ erg.", "4.5e33", 1, "correct"),
    ("minerva", "The energy is $\\boxed{4.5E+33}$ erg.", "4.5\\cdot10^{33}", 1, "correct"),
    ("minerva", "The energy is $\\boxed{4.5e32}$ erg.", "4.5 \\times 10^{33}", -1, "wrong"),
    ("minerva", "The time is $\\boxed{1.2e-3}$ s.", "0.0012", 1, "correct"),
    # OlympiadBench: several answers (a list upstream, joined by data_prep).
    ("olympiadbench", "The pairs are $\\boxed{(-1,0),(2,3)}$", "(2,3),(-1,0)", 1, "correct"),
    ("olympiadbench", "The pairs are $\\boxed{(2,3)}$", "(2,3),(-1,0)", -1, "wrong"),
    ("olympiadbench", "So $n=\\boxed{8}$.", ["$8$"], 1, "correct"),
    # GSM8K: numbers with separators and currency.
    ("gsm8k", "She makes 9*2 = 18 dollars.\nAnswer: $18", "18", 1, "correct"),
    ("gsm8k", "Total pens: \\boxed{2,400}", "2400", 1, "correct"),
    ("gsm8k", "Total pens: \\boxed{2{,}400}", "2400", 1, "correct"),
    ("gsm8k", "The answer is \\boxed{\\$18.00}", "18", 1, "correct"),
    ("gsm8k", "#### 18", "18", -1, "no_answer"),
    # Garbage and edge cases.
    ("math500", "", "1", -1, "empty_response"),
    ("math500", "   \n  ", "1", -1, "empty_response"),
    ("math500", None, "1", -1, "empty_response"),
    ("math500", "\\boxed{}", "1", -1, "no_answer"),
    ("math500", "\\boxed{5}", "", -1, "unparseable_ground_truth"),
    ("math500", "\\boxed{5}", None, -1, "unparseable_ground_truth"),
    ("math500", "asdf \\boxed{\\frac{}{}{}}} ###", "1", -1, "wrong"),
    ("math500", "\x00\x01 random bytes \ufffd \\boxed{\ufffd}", "1", -1, "wrong"),
    ("math500", "Answer: $$$", "1", -1, "unparseable_answer"),
    ("math500", "Answer:", "1", -1, "no_answer"),
]


@pytest.mark.parametrize(("data_source", "response", "ground_truth", "score", "reason"), CASES)
def test_hand_labelled_cases(data_source, response, ground_truth, score, reason):
    result = compute_score(data_source, response, ground_truth, extra_info={})
    assert (result["score"], result["reason"]) == (score, reason), result
    assert result["acc"] == (1.0 if score == 1 else 0.0)


def test_at_least_forty_cases_over_every_source():
    assert len(CASES) >= 40
    assert {case[0] for case in CASES} >= {
        "math_dapo",
        "math500",
        "aime2024",
        "aime2025",
        "amc2023",
        "minerva",
        "olympiadbench",
        "gsm8k",
    }


def test_result_has_the_same_keys_for_every_outcome():
    # verl stacks reward extra info per key across rows: every row must carry the same keys.
    keys = {frozenset(compute_score("x", case[1], case[2]).keys()) for case in CASES[:12] + CASES[-8:]}
    assert keys == {frozenset({"score", "acc", "pred", "reason", "judge_failure"})}


def test_never_raises_on_odd_inputs():
    for response, truth in [(b"\\boxed{1}", "1"), (12, "12"), ("\\boxed{1}", object()), ("\\boxed{1}", float("nan"))]:
        result = compute_score("math500", response, truth)
        assert result["score"] in (1.0, -1.0)


def test_works_in_worker_threads_like_verls_reward_manager():
    # verl runs sync reward functions via loop.run_in_executor(None, ...), i.e. not in the main thread.
    async def score_in_executor():
        loop = asyncio.get_running_loop()
        return await asyncio.gather(
            *(
                loop.run_in_executor(None, lambda: compute_score("math500", "\\boxed{0.5}", "\\frac{1}{2}"))
                for _ in range(8)
            )
        )

    results = asyncio.run(score_in_executor())
    assert {result["reason"] for result in results} == {"correct"}


def test_a_hanging_comparison_times_out_in_a_thread():
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(compute_score, "math500", "\\boxed{9^{9^{9^{9}}}}", "2", None, 1).result(timeout=30)
    assert (result["score"], result["reason"]) == (-1.0, "timeout")
    assert threading.current_thread() is threading.main_thread()
    assert compute_score("math500", "\\boxed{2}", "2")["reason"] == "correct"  # the pool still works


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("x \\boxed{\\frac{1}{2}} y", "\\frac{1}{2}"),
        ("\\fbox{7}", "7"),
        ("so \\boxed 5 done", "5"),
        ("Answer: \\boxed{9}", "9"),
        ("\\boxed{1}\nAnswer: 2", "2"),
        ("Answer: 2\n\\boxed{1}", "1"),
        ("Final Answer: The final answer is $27$. I hope it is correct.", "27"),
        ("no answer here", None),
    ],
)
def test_extract_final_answer(text, answer):
    assert extract_final_answer(text) == answer


def test_ground_truth_text_joins_lists_and_drops_float_zero():
    assert ground_truth_text(["$1$", "$2$"]) == "1, 2"
    assert ground_truth_text(27.0) == "27"


@pytest.mark.parametrize(
    ("response", "unit", "reason"),
    [
        ("\\boxed{120}", "km", "correct"),
        ("\\boxed{120 km}", "km", "correct"),
        ("\\boxed{120\\text{ km}}", "km", "correct"),
        ("\\boxed{5 m/s}", "m/s", "correct"),
        ("\\boxed{5\\mathrm{~m/s}}", "$\\mathrm{~m/s}$", "correct"),
        ("\\boxed{5 m/s}", None, "wrong"),  # without the row's unit, `5 m/s` reads as 5*m/s
        ("\\boxed{6 m/s}", "m/s", "wrong"),
    ],
)
def test_olympiad_answers_are_judged_with_or_without_their_unit(response, unit, reason):
    gold = "120" if "120" in response else "5"
    assert compute_score("olympiadbench", response, gold, {"unit": unit})["reason"] == reason


def test_scientific_notation_is_rewritten_only_where_it_is_a_number():
    from skpo_verl.reward.score import scientific_to_latex

    assert scientific_to_latex("4.5e33") == "4.5 \\times 10^{33}"
    assert scientific_to_latex("2E-7 + x") == "2 \\times 10^{-7} + x"
    assert scientific_to_latex("e^{2} + 3e") == "e^{2} + 3e"  # Euler's number and a variable stay
    assert scientific_to_latex("x2e5") == "x2e5"


def test_a_runaway_final_answer_is_too_long_not_judged():
    result = compute_score("math500", "\\boxed{" + "1+" * 5000 + "1}", "10001")
    assert (result["score"], result["reason"], result["judge_failure"]) == (-1.0, "answer_too_long", 0.0)


def test_judge_failure_marks_only_answers_the_judge_could_not_judge():
    assert compute_score("math500", "\\boxed{9^{9^{9^{9}}}}", "2", None, 1)["judge_failure"] == 1.0
    assert compute_score("math500", "\\boxed{3}", "2")["judge_failure"] == 0.0
    assert compute_score("math500", "no answer", "2")["judge_failure"] == 0.0
