"""A few judge processes that run one function in their main thread, for callers in any thread.

The reward (`skpo_verl.reward`) judges answers with math-verify, whose timeout is a
`signal.alarm` and so works only in a main thread, while verl calls reward functions from
worker threads. Each judge process here runs the function in its main thread.

Judge processes are plain `python -c` children (`subprocess`), not `multiprocessing`
processes: spawn re-imports the caller's `__main__` in every child, which fails when the
caller is a script piped into `python -` (`<stdin>` cannot be re-imported), and fork copies a
multi-threaded Ray worker. A child here imports only this module, with the parent's
`sys.path`, so judging works the same from a script, `python -c`, `python -`, an interactive
session, threads and Ray actors.

Why not `multiprocessing.Pool`: its workers share one task queue guarded by a lock that an
idle worker holds while it waits for work. A worker killed at that moment (Ray ending a
reward actor, the OOM killer) leaves the lock taken for good, and the pool's finalizer blocks
on it at interpreter exit: a Ray reward actor was seen stuck forever in
`Pool._help_stuff_finish`, keeping its judge processes alive. Here every judge process has
its own pipe and nothing is shared, so:

- a call that outlives its guard kills only its own process, which is replaced;
- a judge process that dies is replaced on its next call;
- at exit the owner kills its judge processes (nothing to wait on), and a judge process
  whose owner is gone without that (SIGKILL) ends itself: its pipe reports EOF, and a
  watch thread checks the parent as well.

Start-up (interpreter, imports) is not charged to a call's guard: a process counts as started
once it reports ready, within `start_timeout_s`.

Two kinds of failure, kept apart on purpose: `JudgeFailed` is one call that failed (its
process died, or the function raised), which the caller may count against one answer;
`JudgesUnavailable` means the pool cannot judge at all (a process cannot start, or
`max_consecutive_failures` calls failed in a row), which no answer should be blamed for.
Once unavailable, a pool stays so: every later call raises the same error at once (a broken
environment does not mend itself, and retrying would start processes for nothing).
"""

from __future__ import annotations

import atexit
import importlib
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any


class JudgeTimeout(Exception):
    """The call did not finish within its guard; its judge process was killed and replaced."""


class JudgeFailed(Exception):
    """One call failed: its judge process died during it, or the function raised (message says which)."""


class JudgesUnavailable(RuntimeError):
    """The pool cannot judge at all: a judge process cannot start, or calls keep failing."""


# Run by each judge process: stdlib only until the parent's sys.path is in place.
_BOOTSTRAP = """
import sys
from multiprocessing.connection import Connection
connection = Connection(int(sys.argv[1]))
sys_path, parent_pid, function, warm_modules = connection.recv()
sys.path[:] = sys_path
try:
    from skpo_verl.reward.judge_pool import serve
except BaseException as error:
    connection.send(("start_error", f"{type(error).__name__}: {error}"))
    raise SystemExit(1)
serve(connection, parent_pid, function, warm_modules)
"""


class _JudgeProcess:
    def __init__(self, function: str, warm_modules: Sequence[str]):
        parent_end, child_end = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, str(child_end.fileno())],
                pass_fds=(child_end.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        except OSError as error:  # e.g. the process limit (EAGAIN) or a missing interpreter
            parent_end.close()
            raise JudgesUnavailable(
                f"could not start a judge process ({type(error).__name__}: {error}); "
                "raise the process limit (`ulimit -u`) or use fewer judge processes"
            ) from error
        finally:
            child_end.close()  # only the child holds its end: the child sees EOF when the owner is gone
        self.connection = Connection(parent_end.detach())
        self.connection.send((list(sys.path), os.getpid(), function, tuple(warm_modules)))
        self.ready = False

    def wait_ready(self, start_timeout_s: float, imports: str) -> None:
        fix = f"check that `{sys.executable} -c 'import {imports}'` works in this environment"
        try:
            if not self.connection.poll(start_timeout_s):
                raise JudgesUnavailable(f"a judge process did not start within {start_timeout_s:g} s; {fix}")
            status, detail = self.connection.recv()
        except (EOFError, OSError) as error:
            code = self.process.wait(timeout=5)
            raise JudgesUnavailable(f"a judge process exited with status {code} while starting; {fix}") from error
        if status == "start_error":
            raise JudgesUnavailable(f"a judge process could not start: {detail}; {fix}")
        self.ready = True

    def kill(self) -> None:
        self.connection.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=5)


class JudgePool:
    """`size` judge processes running `function` ("module:name"); `call` blocks until one is free."""

    def __init__(
        self,
        function: str,
        size: int,
        warm_modules: Sequence[str] = (),
        start_timeout_s: float = 300.0,
        max_consecutive_failures: int = 10,
    ):
        if size < 1:
            raise ValueError(f"a judge pool needs at least one process, got {size}")
        if max_consecutive_failures < 1:
            raise ValueError(f"max_consecutive_failures must be at least 1, got {max_consecutive_failures}")
        self._function, self._warm_modules, self._start_timeout_s = function, tuple(warm_modules), start_timeout_s
        self._max_consecutive_failures = max_consecutive_failures
        self._consecutive_failures = 0
        # An idle slot holds a started process, or None: start one when the slot is next used.
        self._idle: queue.Queue[_JudgeProcess | None] = queue.Queue()
        self._lock = threading.Lock()
        self._processes: set[_JudgeProcess] = set()
        self._closed = False
        self._unavailable: str | None = None  # why the pool cannot judge, once it cannot
        for _ in range(size):
            self._fill_slot()
        atexit.register(self.close)

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [judge.process.pid for judge in self._processes]

    def call(self, args: tuple, timeout_s: float) -> Any:
        """`function(*args)` in a judge process; JudgeTimeout after `timeout_s` of work."""
        self.check()
        if self._closed:
            raise JudgesUnavailable("the judge pool is closed")
        judge = self._idle.get()
        try:
            if judge is None:
                judge = self._start()
            if not judge.ready:
                judge.wait_ready(self._start_timeout_s, self._imports())
            judge.connection.send(args)
            if not judge.connection.poll(timeout_s):
                raise JudgeTimeout(f"no verdict within {timeout_s:g} s")
            status, value = judge.connection.recv()
        except JudgeTimeout:
            self._replace(judge)
            self._reset_failures()  # a slow answer, not a broken judge
            raise
        except JudgesUnavailable as error:
            self.mark_unavailable(str(error))
            self._replace(judge)
            raise
        except (EOFError, OSError) as error:  # the process died (killed, crashed)
            self._replace(judge)
            self._count_failure(f"judge process ended: {error!r}")
        self._idle.put(judge)
        if status == "error":
            self._count_failure(value)
        self._reset_failures()
        return value

    def check(self) -> None:
        """JudgesUnavailable if the pool can no longer judge."""
        if self._unavailable:
            raise JudgesUnavailable(self._unavailable)

    def mark_unavailable(self, reason: str) -> None:
        """From now on every call raises JudgesUnavailable(reason) (the first reason is kept)."""
        with self._lock:
            self._unavailable = self._unavailable or reason

    def close(self) -> None:
        """Kill every judge process (also run at interpreter exit)."""
        with self._lock:
            self._closed = True
            processes, self._processes = list(self._processes), set()
        for judge in processes:
            judge.kill()

    def _imports(self) -> str:
        return ", ".join([self._function.split(":")[0], *self._warm_modules])

    def _start(self) -> _JudgeProcess:
        judge = _JudgeProcess(self._function, self._warm_modules)
        with self._lock:
            self._processes.add(judge)
        return judge

    def _replace(self, judge: _JudgeProcess | None) -> None:
        """Kill `judge` and start its successor now (it warms up while the slot is idle)."""
        if judge is not None:
            with self._lock:
                self._processes.discard(judge)
            judge.kill()
        if not self._closed:
            self._fill_slot()

    def _fill_slot(self) -> None:
        """An idle slot with a process starting up (it warms up while idle), or None if it cannot start."""
        try:
            self._idle.put(self._start())
        except JudgesUnavailable:
            self._idle.put(None)  # reported by the next call that uses this slot

    def _reset_failures(self) -> None:
        with self._lock:
            self._consecutive_failures = 0

    def _count_failure(self, message: str) -> None:
        with self._lock:
            self._consecutive_failures += 1
            failures = self._consecutive_failures
        if failures >= self._max_consecutive_failures:
            reason = f"{failures} judge calls in a row failed (timeouts not counted); the last: {message}"
            self.mark_unavailable(reason)
            raise JudgesUnavailable(reason)
        raise JudgeFailed(message)


def serve(connection: Connection, parent_pid: int, function: str, warm_modules: tuple[str, ...]) -> None:
    """A judge process: run `function` on each request from the pipe until the owner is gone."""
    _exit_with_parent(parent_pid)
    try:
        module, name = function.split(":")
        target = getattr(importlib.import_module(module), name)
        for warm in warm_modules:
            importlib.import_module(warm)
    except BaseException as error:  # noqa: BLE001 - reported to the owner, which raises JudgesUnavailable
        connection.send(("start_error", f"{type(error).__name__}: {error}"))
        return
    connection.send(("ready", None))
    while True:
        try:
            args = connection.recv()
        except (EOFError, OSError):
            return
        try:
            reply = ("ok", target(*args))
        except Exception as error:  # noqa: BLE001 - reported to the caller, the process stays usable
            reply = ("error", f"{type(error).__name__}: {error}")
        connection.send(reply)


def _exit_with_parent(parent_pid: int, poll_s: float = 1.0) -> None:
    """End this process once `parent_pid` is no longer its parent (a blocked function never sees EOF)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(0)

    threading.Thread(target=watch, name="judge-parent-watch", daemon=True).start()
