"""The judge processes behind the reward: results, guards, dead processes, and no leftovers.

Functions are given as "module:name"; `operator:truediv` and `time:sleep` make the outcomes
hand-checkable (3/4 = 0.75, a sleep longer than the guard).
"""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from skpo_verl.reward.judge_pool import JudgeFailed, JudgePool, JudgesUnavailable, JudgeTimeout


def gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def pool():
    judges = JudgePool("operator:truediv", size=1, warm_modules=("math_verify",))
    yield judges
    judges.close()


def test_start_up_is_not_charged_to_the_first_calls_guard(pool):
    # Spawning and importing math_verify takes seconds; the guard covers only the call itself.
    assert pool.call((3, 4), timeout_s=0.5) == 0.75


def test_an_error_in_the_function_is_reported_and_the_process_kept(pool):
    pid = pool.pids[0]
    with pytest.raises(JudgeFailed, match="ZeroDivisionError"):
        pool.call((1, 0), timeout_s=5)
    assert pool.call((1, 4), timeout_s=5) == 0.25
    assert pool.pids == [pid]


def test_a_call_past_its_guard_kills_only_its_process_which_is_replaced():
    judges = JudgePool("time:sleep", size=1)
    try:
        assert judges.call((0,), timeout_s=60) is None  # started
        stuck = judges.pids[0]
        started = time.monotonic()
        with pytest.raises(JudgeTimeout):
            judges.call((30,), timeout_s=0.5)
        assert time.monotonic() - started < 5
        assert gone(stuck, within_s=1)
        assert judges.call((0,), timeout_s=60) is None
        assert judges.pids != [stuck]
    finally:
        judges.close()


def test_a_killed_judge_process_fails_one_call_and_is_replaced(pool):
    assert pool.call((1, 2), timeout_s=5) == 0.5
    killed = pool.pids[0]
    os.kill(killed, signal.SIGKILL)
    assert gone(killed)
    with pytest.raises(JudgeFailed, match="judge process ended"):
        pool.call((1, 2), timeout_s=5)
    assert pool.call((1, 2), timeout_s=5) == 0.5
    assert pool.pids != [killed]


OWNER = """
import os, signal, sys
from skpo_verl.reward.judge_pool import JudgePool
judges = JudgePool("operator:truediv", size=2)
print(judges.call((1, 2), timeout_s=30), *judges.pids, flush=True)
if sys.argv[1] == "kill-judges-then-exit":
    for pid in judges.pids:
        os.kill(pid, signal.SIGKILL)
else:
    sys.stdin.read()
"""


def start_owner(mode: str):
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    first, *pids = owner.stdout.readline().split()
    assert first == "0.5" and len(pids) == 2
    return owner, [int(pid) for pid in pids]


def test_the_owner_exits_even_after_its_judges_were_killed():
    # multiprocessing.Pool hangs at exit here (its finalizer waits on a lock a killed worker held).
    owner, judges = start_owner("kill-judges-then-exit")
    try:
        assert owner.wait(timeout=20) == 0
    finally:
        owner.kill()
    assert all(gone(pid) for pid in judges)


def test_judges_end_when_their_owner_is_killed():
    # As Ray ends a reward worker at shutdown: SIGKILL, no clean-up.
    owner, judges = start_owner("wait")
    assert all(psutil.Process(pid).is_running() for pid in judges)
    owner.kill()
    owner.wait()
    assert all(gone(pid) for pid in judges)


def test_exit_with_parent_ends_a_process_blocked_in_the_function():
    # A judge stuck in C code never reads its pipe's EOF; the watch thread ends it anyway.
    child = (
        "import os, time\n"
        "from skpo_verl.reward.judge_pool import _exit_with_parent\n"
        "_exit_with_parent(os.getppid(), poll_s=0.1)\n"
        "print(os.getpid(), flush=True)\n"
        "time.sleep(60)\n"
    )
    parent_script = f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {child!r}]); sys.stdin.read()"
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        orphan = int(parent.stdout.readline())
    finally:
        parent.kill()
        parent.wait()
    assert gone(orphan, within_s=5)


# ---- judging itself broken: JudgesUnavailable, not one failed answer after another ----


def test_a_run_of_crashing_calls_makes_the_pool_unavailable():
    # os._exit(1) ends the judge process mid-call, as a segfault or the OOM killer would.
    judges = JudgePool("os:_exit", size=1, max_consecutive_failures=3)
    try:
        for _ in range(2):
            with pytest.raises(JudgeFailed, match="judge process ended"):
                judges.call((1,), timeout_s=30)
        with pytest.raises(JudgesUnavailable, match="3 judge calls in a row failed"):
            judges.call((1,), timeout_s=30)
        pids = judges.pids
        # From now on every call fails at once, with the first cause, and starts nothing.
        with pytest.raises(JudgesUnavailable, match="3 judge calls in a row failed"):
            judges.call((1,), timeout_s=30)
        assert judges.pids == pids
    finally:
        judges.close()


def test_a_verdict_resets_the_failure_count():
    judges = JudgePool("operator:truediv", size=1, max_consecutive_failures=2)
    try:
        with pytest.raises(JudgeFailed, match="ZeroDivisionError"):
            judges.call((1, 0), timeout_s=30)
        assert judges.call((1, 2), timeout_s=30) == 0.5
        with pytest.raises(JudgeFailed, match="ZeroDivisionError"):
            judges.call((1, 0), timeout_s=30)
        with pytest.raises(JudgesUnavailable, match="2 judge calls in a row failed.*ZeroDivisionError"):
            judges.call((1, 0), timeout_s=30)
    finally:
        judges.close()


def test_a_function_that_cannot_be_imported_is_a_start_failure_naming_the_import():
    judges = JudgePool("no_such_judge_module:judge", size=1)
    try:
        with pytest.raises(JudgesUnavailable, match="could not start: ModuleNotFoundError: No module named "):
            judges.call((1,), timeout_s=30)
    finally:
        judges.close()


def test_a_judge_that_crashes_while_starting_reports_its_exit_status(tmp_path, monkeypatch):
    (tmp_path / "crash_on_import.py").write_text("import os\nos._exit(7)\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # judge processes get the owner's sys.path
    judges = JudgePool("operator:truediv", size=1, warm_modules=("crash_on_import",))
    try:
        with pytest.raises(JudgesUnavailable, match="exited with status 7 while starting"):
            judges.call((1, 2), timeout_s=30)
    finally:
        judges.close()


def test_a_judge_process_that_cannot_be_created_is_a_start_failure(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    judges = JudgePool("operator:truediv", size=1)
    try:
        with pytest.raises(JudgesUnavailable, match="could not start a judge process .FileNotFoundError"):
            judges.call((1, 2), timeout_s=30)
    finally:
        judges.close()
