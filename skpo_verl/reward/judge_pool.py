"""A few spawned processes that run one function in their main thread, for callers in any thread.

The reward (`skpo_verl.reward`) judges answers with math-verify, whose timeout is a
`signal.alarm` and so works only in a main thread, while verl calls reward functions from
worker threads. Each judge process here runs the function in its main thread.

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

Start-up (spawn, imports) is not charged to a call's guard: a process counts as started
once it reports ready, within `start_timeout_s`.
"""

from __future__ import annotations

import atexit
import importlib
import multiprocessing
import os
import queue
import threading
import time
from typing import Any, Sequence


class JudgeTimeout(Exception):
    """The call did not finish within its guard; its judge process was killed and replaced."""


class JudgeFailed(Exception):
    """The judge process died, did not start in time, or the function raised (message says which)."""


class _JudgeProcess:
    def __init__(self, context, function: str, warm_modules: Sequence[str]):
        self.connection, child_end = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(child_end, os.getpid(), function, tuple(warm_modules)), daemon=True
        )
        self.process.start()
        child_end.close()  # only the child holds its end: the child sees EOF when the owner is gone
        self.ready = False

    def kill(self) -> None:
        self.connection.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)


class JudgePool:
    """`size` spawned processes running `function` ("module:name"); `call` blocks until one is free."""

    def __init__(
        self, function: str, size: int, warm_modules: Sequence[str] = (), start_timeout_s: float = 300.0
    ):
        if size < 1:
            raise ValueError(f"a judge pool needs at least one process, got {size}")
        self._context = multiprocessing.get_context("spawn")
        self._function, self._warm_modules, self._start_timeout_s = function, tuple(warm_modules), start_timeout_s
        self._idle: queue.Queue[_JudgeProcess] = queue.Queue()
        self._lock = threading.Lock()
        self._processes: set[_JudgeProcess] = set()
        self._closed = False
        for _ in range(size):
            self._idle.put(self._start())
        atexit.register(self.close)

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [judge.process.pid for judge in self._processes]

    def call(self, args: tuple, timeout_s: float) -> Any:
        """`function(*args)` in a judge process; JudgeTimeout after `timeout_s` of work."""
        if self._closed:
            raise JudgeFailed("the judge pool is closed")
        judge = self._idle.get()
        try:
            if not judge.ready:
                if not judge.connection.poll(self._start_timeout_s):
                    raise JudgeFailed(f"judge process did not start within {self._start_timeout_s:g} s")
                judge.connection.recv()  # "ready"
                judge.ready = True
            judge.connection.send(args)
            if not judge.connection.poll(timeout_s):
                raise JudgeTimeout(f"no verdict within {timeout_s:g} s")
            status, value = judge.connection.recv()
        except (JudgeTimeout, JudgeFailed):
            self._replace(judge)
            raise
        except (EOFError, OSError) as error:  # the process died (killed, crashed)
            self._replace(judge)
            raise JudgeFailed(f"judge process ended: {error!r}") from error
        self._idle.put(judge)
        if status == "error":
            raise JudgeFailed(value)
        return value

    def close(self) -> None:
        """Kill every judge process (also run at interpreter exit)."""
        with self._lock:
            self._closed = True
            processes, self._processes = list(self._processes), set()
        for judge in processes:
            judge.kill()

    def _start(self) -> _JudgeProcess:
        judge = _JudgeProcess(self._context, self._function, self._warm_modules)
        with self._lock:
            self._processes.add(judge)
        return judge

    def _replace(self, judge: _JudgeProcess) -> None:
        with self._lock:
            self._processes.discard(judge)
            closed = self._closed
        judge.kill()
        if not closed:
            self._idle.put(self._start())


def _serve(connection, parent_pid: int, function: str, warm_modules: tuple[str, ...]) -> None:
    """A judge process: run `function` on each request from the pipe until the owner is gone."""
    _exit_with_parent(parent_pid)
    module, name = function.split(":")
    target = getattr(importlib.import_module(module), name)
    for warm in warm_modules:
        importlib.import_module(warm)
    connection.send("ready")
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
