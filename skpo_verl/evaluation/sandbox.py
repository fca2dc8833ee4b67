"""LiveCodeBench grading: run a generated program against its tests in a limited subprocess.

The tests are verl's APPS layout, `{"inputs": [...], "outputs": [...]}` plus `"fn_name"` for
LeetCode-style functional problems (what `skpo-prepare-data --source livecodebench` writes as
ground truth), and the comparison is verl's own (`verl/utils/reward_score/prime_code/
testing_util.py` `run_test`, with its `reliability_guard`), run inside the child process.

What the sandbox does, per program:
- a fresh temporary working directory, removed afterwards; a minimal environment
  (HOME and TMPDIR point into it); stdin carries only the task, read before the program runs; a
  new session, killed as a group;
- limits set in the child before the program runs: CPU seconds (RLIMIT_CPU), address space
  (RLIMIT_AS), size of any written file (RLIMIT_FSIZE), no core dumps; plus a per-test alarm
  (verl's tester) and a wall-clock timeout in the parent;
- a Python audit hook (PEP 578) that refuses opening files for writing, and creating, removing,
  renaming or changing files, outside the working directory; starting processes; signalling
  other processes; loading native libraries through ctypes; opening sockets.
What it does not do: it is not a security boundary against hostile code. The audit hook only
sees what goes through the Python runtime: a C extension already importable in the environment
can write anywhere the user can, read any readable file, or use the network. For untrusted code
run it inside a container or VM without network, or use verl's sandbox-fusion scorer.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any

DEFAULT_TIMEOUT_S = 6  # per test, as LiveCodeBench's own evaluator
DEFAULT_MEMORY_MB = 2048
DEFAULT_FILE_MB = 16
MAX_CPU_S = 120  # a whole problem's CPU budget never exceeds this
_CODE_BLOCK = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class Limits:
    timeout_s: int = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB
    file_mb: int = DEFAULT_FILE_MB


def verl_tester_path() -> str:
    """The file of verl's APPS tester, found without importing verl (see sandbox_child.load_tester)."""
    spec = find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("verl is not installed; `pip install -e .` installs the pinned version.")
    path = os.path.join(spec.submodule_search_locations[0], "utils", "reward_score", "prime_code", "testing_util.py")
    if not os.path.exists(path):
        raise RuntimeError(f"{path} is missing: this verl build lacks the prime_code scorer the code grader runs.")
    return path


def extract_code(response: str) -> str | None:
    """The last fenced code block (```python, ```py or bare ```), or None."""
    blocks = _CODE_BLOCK.findall(response or "")
    return blocks[-1] if blocks else None


def run_tests(code: str, tests: dict[str, Any], limits: Limits = Limits()) -> dict[str, Any]:
    """{"passed": all tests passed, "results": verl's per-test list, "reason"}.

    reason: "passed", "wrong_answer", "runtime_error" (an exception, including MemoryError and
    refused writes), "compile_error", "timeout" (alarm, CPU limit or wall clock) or "killed".
    """
    count = len(tests["inputs"])
    cpu_s = min(MAX_CPU_S, limits.timeout_s * count + 1)
    nonce = secrets.token_hex(8)
    task = {
        "code": code,
        "tests": tests,
        "timeout_s": limits.timeout_s,
        "cpu_s": cpu_s,
        "memory_bytes": limits.memory_mb << 20,
        "file_bytes": limits.file_mb << 20,
        "tester": verl_tester_path(),
        "nonce": nonce,
    }
    child = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_child.py")
    with tempfile.TemporaryDirectory(prefix="skpo_sandbox_") as workdir:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": workdir,
            "TMPDIR": workdir,
            "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        process = subprocess.Popen(
            [sys.executable, "-I", child],
            cwd=workdir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
        )
        try:
            stdout, _ = process.communicate(json.dumps(task), timeout=cpu_s + 10)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            process.communicate()
            return {"passed": False, "results": [], "reason": "timeout"}
        finally:
            if process.poll() is None:
                _kill_group(process)
    return _verdict(stdout, nonce, process.returncode, count)


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may have ended on its own meanwhile
        os.killpg(process.pid, signal.SIGKILL)


def _verdict(stdout: str, nonce: str, returncode: int, count: int) -> dict[str, Any]:
    if nonce not in stdout:
        reason = "timeout" if returncode in (-signal.SIGXCPU, -signal.SIGKILL, -signal.SIGALRM) else "killed"
        return {"passed": False, "results": [], "reason": reason}
    report = json.loads(stdout.rsplit(nonce, 1)[1])
    results = report["results"]
    passed = len(results) == count and all(value is True for value in results)
    if passed:
        reason = "passed"
    elif -2 in results:
        reason = "compile_error"
    elif -1 in results:
        reason = "timeout" if "TimeoutError" in str(report.get("error")) else "runtime_error"
    else:
        reason = "wrong_answer"
    return {"passed": passed, "results": results, "reason": reason}


def judge_code(response: str, ground_truth: str | dict, limits: Limits = Limits()) -> dict[str, Any]:
    """{"acc", "pred" (the extracted code), "reason"} for one LiveCodeBench response."""
    tests = json.loads(ground_truth) if isinstance(ground_truth, str) else ground_truth
    if not isinstance(tests, dict) or not tests.get("inputs") or len(tests["inputs"]) != len(tests.get("outputs", [])):
        raise ValueError(
            "LiveCodeBench ground truth must be JSON {'inputs': [...], 'outputs': [...] (same length), 'fn_name'?}; "
            "re-run skpo-prepare-data --source livecodebench."
        )
    code = extract_code(response)
    if code is None:
        return {"acc": 0.0, "pred": "", "reason": "no_code"}
    verdict = run_tests(code, tests, limits)
    return {"acc": float(verdict["passed"]), "pred": code, "reason": verdict["reason"]}
