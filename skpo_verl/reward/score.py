"""SKPO's outcome reward R_II: +1 when the final answer matches the ground truth, else -1.

Select it in verl with

    reward.custom_reward_function.path=pkg://skpo_verl.reward
    reward.custom_reward_function.name=compute_score

(`pkg://` makes verl 0.9.1 import the installed module by name, `verl/utils/import_utils.py`
`load_module`; a plain file path such as `$(python -c 'import skpo_verl.reward as r; print(r.__file__)')`
works too).

The same function judges every source data_prep writes (DAPO-Math-17k, MATH-500, AIME, AMC,
Minerva, OlympiadBench, GSM8K): the final answer is the last `\\boxed{...}` or `Answer: ...`
line of the response, and equivalence is decided by math-verify (fractions, decimals,
LaTeX, sets, intervals, `x = 3` vs `3`).

Timeouts. verl's reward managers call a synchronous reward function through
`loop.run_in_executor(None, ...)` (`verl/experimental/reward_loop/reward_manager/naive.py`),
i.e. in a worker thread, where math-verify's `signal.alarm` timeout raises. So judging runs in
a few judge processes (`skpo_verl.reward.judge_pool`; plain `python -c` children, so it works
the same from a script, `python -c`, `python -`, an interactive session, threads and Ray
actors): each judgment runs in its process's main thread, where math-verify's own timeout works,
and the caller additionally waits at most `2 * timeout_s + 5` seconds (sympy can hang inside C
code, where no signal is delivered); on that guard only that judge process is killed and replaced.
Both give -1 with reason "timeout". Judge processes never outlive the reward worker that started them.

Per answer the function never raises: a wrong, unparseable, oversized or pathological
answer is -1 with its reason. It raises `JudgesUnavailable` only when judging itself is
broken (judge processes cannot start, e.g. math-verify fails to import in them; the first
call's self-test, `1` against `1`, is not "correct"; or
`SKPO_REWARD_MAX_CONSECUTIVE_JUDGE_FAILURES` judge calls failed in a row): scoring every
answer -1 would train on noise, so verl's reward worker gets the error instead. From then on
every call raises, also for responses that need no judging (no answer): in verl's V1
trainer a response scored without error survives while its siblings fail, and a step of
such survivors would train on padding.

It returns verl's dict form: `score` (the reward), plus `acc` (1.0/0.0), `pred` (the
extracted answer, for verl's maj@N), `reason` and `judge_failure` (1.0 when the reason is
"timeout" or "error:*", i.e. the judge gave no verdict; its mean is the step's share of
judge failures), recorded by verl as reward extra info. Reasons:
"correct", "wrong", "empty_response", "no_answer" (no boxed / Answer: line),
"answer_too_long", "unparseable_answer", "unparseable_ground_truth", "timeout",
"error:<ExceptionType>".

OlympiadBench rows carry their answer's unit in `extra_info["unit"]` (data_prep): an answer
is judged with or without it. Scientific notation (`4.5e33`) is read as `4.5 \\times 10^{33}`.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

import numpy as np

from skpo_verl.reward.judge_pool import JudgeFailed, JudgePool, JudgesUnavailable, JudgeTimeout

CORRECT = 1.0
INCORRECT = -1.0
DEFAULT_TIMEOUT_S = 5
POOL_PROCESSES_ENV = "SKPO_REWARD_JUDGE_PROCESSES"
DEFAULT_POOL_PROCESSES = 2
MAX_FAILURES_ENV = "SKPO_REWARD_MAX_CONSECUTIVE_JUDGE_FAILURES"
DEFAULT_MAX_FAILURES = 10
# Longer "final answers" are runaway text, not answers; math-verify would only time out on them.
MAX_ANSWER_CHARS = 2000

_BOXED_COMMANDS = ("\\boxed", "\\fbox")
_ANSWER_LINE = re.compile(
    r"^[ \t>*#_]*(?:final\s+answer|answer)[ \t*_]*[:：][ \t*_]*(?P<answer>.+?)[ \t*_]*$",
    re.IGNORECASE | re.MULTILINE,
)
# Minerva-style closing sentence: "Final Answer: The final answer is $27$. I hope it is correct."
_FINAL_ANSWER_IS = re.compile(
    r"final answer is[ \t:]*(?P<answer>.+?)(?:\.\s*$|\.\s+I hope|$)", re.IGNORECASE | re.MULTILINE
)
_MATH_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
# 4.5e33, 1E-3, 2.e+5 as written by programs and Minerva's answers; math-verify reads `e` as Euler's number.
_SCIENTIFIC = re.compile(r"(?<![\w.\\])(\d+\.?\d*|\.\d+)[eE]([+-]?\d+)(?![\w.])")
_UNIT_WRAPPER = re.compile(r"^\\(?:mathrm|text|mbox)\s*\{(.*)\}$")


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    **_verl_kwargs: Any,
) -> dict[str, Any]:
    """verl's custom reward signature; returns {"score": +1/-1, "acc", "pred", "reason", "judge_failure"}."""
    try:
        return _score(solution_str, ground_truth, extra_info, timeout_s)
    except JudgesUnavailable:
        raise  # judging itself is broken: stop, do not score every answer -1
    except Exception as error:  # noqa: BLE001 - one bad answer must never stop a training step
        return _result(False, pred="", reason=f"error:{type(error).__name__}")


def _score(solution_str: Any, ground_truth: Any, extra_info: Any, timeout_s: int) -> dict[str, Any]:
    _judge_pool()  # judges that cannot judge stop every call, whether or not it needs them
    if not isinstance(solution_str, str) or not solution_str.strip():
        return _result(False, pred="", reason="empty_response")
    gold = ground_truth_text(ground_truth)
    if not gold:
        return _result(False, pred="", reason="unparseable_ground_truth")
    raw = _raw_final_answer(solution_str)
    if raw is not None and len(raw) > MAX_ANSWER_CHARS:
        return _result(False, pred="", reason="answer_too_long")
    pred = strip_math_delimiters(raw) if raw is not None else None
    if not pred:
        return _result(False, pred="", reason="no_answer")
    verdict = _judge_in_pool(pred, gold, timeout_s)
    unit = _unit_core(extra_info.get("unit") if isinstance(extra_info, dict) else None)
    if verdict != "correct" and unit:
        without_unit = _strip_unit(pred, unit)
        if without_unit and without_unit != pred:
            verdict = _judge_in_pool(without_unit, gold, timeout_s)
    return _result(verdict == "correct", pred=pred, reason=verdict)


def _result(correct: bool, pred: str, reason: str) -> dict[str, Any]:
    return {
        "score": CORRECT if correct else INCORRECT,
        "acc": 1.0 if correct else 0.0,
        "pred": pred,
        "reason": reason,
        "judge_failure": 1.0 if is_judge_failure(reason) else 0.0,
    }


def is_judge_failure(reason: str) -> bool:
    """The judge gave no verdict (as opposed to a verdict or a response without an answer)."""
    return reason == "timeout" or reason.startswith("error:")


def ground_truth_text(ground_truth: Any) -> str:
    """The ground truth as one string; lists (OlympiadBench's several answers) are comma-joined."""
    if ground_truth is None:
        return ""
    if isinstance(ground_truth, (list, tuple, np.ndarray)):
        return ", ".join(strip_math_delimiters(str(item)) for item in ground_truth if str(item).strip())
    if isinstance(ground_truth, float) and ground_truth.is_integer():
        return str(int(ground_truth))
    return strip_math_delimiters(str(ground_truth))


def extract_final_answer(text: str) -> str | None:
    """The response's final answer: whichever of the last `\\boxed{}` / `Answer:` line ends last.

    An `Answer:` line that itself contains a `\\boxed{}` (or "the final answer is X") yields that content.
    """
    raw = _raw_final_answer(text)
    if raw is None:
        return None
    return strip_math_delimiters(raw) or None


def _raw_final_answer(text: str) -> str | None:
    candidates = [found for found in (_last_boxed(text), _last_answer_line(text)) if found is not None]
    if not candidates:
        return None
    _, answer = max(candidates)
    inner = _last_boxed(answer)
    phrase = _FINAL_ANSWER_IS.search(answer)
    if inner is not None:
        return inner[1]
    if phrase is not None:
        return phrase.group("answer")
    return answer


def _last_boxed(text: str) -> tuple[int, str] | None:
    """(end offset, content) of the last `\\boxed{...}` / `\\fbox{...}` / `\\boxed 5`."""
    start = max(text.rfind(command) for command in _BOXED_COMMANDS)
    if start < 0:
        return None
    command = next(c for c in _BOXED_COMMANDS if text.startswith(c, start))
    rest = start + len(command)
    if rest < len(text) and text[rest] == " ":
        match = re.match(r" ([^\s$]+)", text[rest:])
        return (rest + match.end(), match.group(1)) if match else None
    if rest >= len(text) or text[rest] != "{":
        return None
    depth = 0
    for offset in range(rest, len(text)):
        depth += {"{": 1, "}": -1}.get(text[offset], 0)
        if depth == 0:
            return offset + 1, text[rest + 1 : offset]
    return None


def _last_answer_line(text: str) -> tuple[int, str] | None:
    matches = list(_ANSWER_LINE.finditer(text)) + list(_FINAL_ANSWER_IS.finditer(text))
    if not matches:
        return None
    last = max(matches, key=lambda match: match.end("answer"))
    return last.end("answer"), last.group("answer")


def strip_math_delimiters(answer: str) -> str:
    """Remove surrounding `$..$`, `\\(..\\)`, `\\[..\\]`, bold marks and a final period."""
    answer = answer.strip().strip("*").strip()
    changed = True
    while changed:
        changed = False
        for left, right in _MATH_DELIMITERS:
            if len(answer) > len(left) + len(right) and answer.startswith(left) and answer.endswith(right):
                answer = answer[len(left) : -len(right)].strip()
                changed = True
        if answer.endswith("."):
            answer = answer[:-1].rstrip()
            changed = True
    return answer


def judge_answer(pred: str, gold: str, timeout_s: int = DEFAULT_TIMEOUT_S) -> str:
    """math-verify equivalence of two answer strings. Must run in a main thread (signal timeout).

    Returns "correct", "wrong", "unparseable_answer", "unparseable_ground_truth" or "timeout".
    """
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    pred, gold = scientific_to_latex(pred), scientific_to_latex(gold)
    try:
        gold_parsed = parse(f"\\boxed{{{gold}}}", parsing_timeout=timeout_s, raise_on_error=True)
        if not gold_parsed:
            return "unparseable_ground_truth"
        pred_parsed = parse(f"\\boxed{{{pred}}}", parsing_timeout=timeout_s, raise_on_error=True)
        if not pred_parsed:
            return "correct" if _plain(pred) == _plain(gold) else "unparseable_answer"
        equal = verify(gold_parsed, pred_parsed, timeout_seconds=timeout_s, raise_on_error=True)
    except TimeoutException:
        return "timeout"
    except Exception as error:  # noqa: BLE001 - sympy/latex2sympy failing on this one answer
        return f"error:{type(error).__name__}"
    return "correct" if equal or _plain(pred) == _plain(gold) else "wrong"


def scientific_to_latex(answer: str) -> str:
    """`4.5e33` -> `4.5 \\times 10^{33}` (math-verify reads the `e` of `4.5e33` as Euler's number)."""
    return _SCIENTIFIC.sub(lambda match: f"{match.group(1)} \\times 10^{{{match.group(2)}}}", answer)


def _unit_core(unit: Any) -> str:
    """A dataset unit (`$\\mathrm{~m/s}$`, `cm`) without math delimiters, wrapper and spacing."""
    if not isinstance(unit, str):
        return ""
    core = strip_math_delimiters(unit)
    wrapped = _UNIT_WRAPPER.match(core)
    return (wrapped.group(1) if wrapped else core).replace("~", " ").strip()


def _strip_unit(pred: str, unit: str) -> str:
    """`5 m/s`, `5\\text{ m/s}`, `5\\mathrm{~m/s}` -> `5` for the unit `m/s`."""
    wrapped = r"\\(?:mathrm|text|mbox)\s*\{[\s~]*" + re.escape(unit) + r"\s*\}"
    return re.sub(rf"(?:{wrapped}|\s*{re.escape(unit)})\s*$", "", pred).strip()


def _plain(answer: str) -> str:
    """Text answers (Minerva's units, OlympiadBench's words) also count when equal up to spacing/case."""
    return re.sub(r"\s+|\\[,;!: ]|\\text\{|\}|\{", "", answer).lower()


_judges_lock = threading.Lock()
_judges: JudgePool | None = None


def _judge_in_pool(pred: str, gold: str, timeout_s: int) -> str:
    try:
        return _judge_pool().call((pred, gold, timeout_s), timeout_s=_guard_s(timeout_s))
    except JudgeTimeout:
        return "timeout"
    except JudgeFailed:
        return "error:JudgeFailed"
    except JudgesUnavailable as error:
        raise _unavailable(error) from error


def _guard_s(timeout_s: int) -> float:
    return 2 * timeout_s + 5


def _unavailable(error: JudgesUnavailable) -> JudgesUnavailable:
    return JudgesUnavailable(
        f"SKPO's reward cannot judge answers: {error}. Scoring every answer -1 would train on noise, "
        f"so the reward stops here (processes: {POOL_PROCESSES_ENV}, failures tolerated in a row: "
        f"{MAX_FAILURES_ENV})."
    )


def _judge_pool() -> JudgePool:
    """The process's judges, started and self-tested on first use; JudgesUnavailable once they cannot judge."""
    global _judges
    with _judges_lock:
        if _judges is None:
            processes = int(os.environ.get(POOL_PROCESSES_ENV, DEFAULT_POOL_PROCESSES))
            max_failures = int(os.environ.get(MAX_FAILURES_ENV, DEFAULT_MAX_FAILURES))
            # By the installed module's name: verl may have loaded this file under another one (a path).
            _judges = JudgePool(
                "skpo_verl.reward.score:judge_answer",
                processes,
                warm_modules=("math_verify",),
                max_consecutive_failures=max_failures,
            )
            _self_test(_judges)
    try:
        _judges.check()
    except JudgesUnavailable as error:
        raise _unavailable(error) from error
    return _judges


def _self_test(judges: JudgePool) -> None:
    try:
        verdict = judges.call(("1", "1", DEFAULT_TIMEOUT_S), timeout_s=_guard_s(DEFAULT_TIMEOUT_S))
    except (JudgeTimeout, JudgeFailed) as error:
        verdict = f"{type(error).__name__}: {error}"
    except JudgesUnavailable as error:
        raise _unavailable(error) from error
    if verdict != "correct":
        reason = f"the self-test judged `1` against `1` as {verdict!r}, not 'correct'"
        judges.mark_unavailable(reason)
        raise _unavailable(JudgesUnavailable(reason))
