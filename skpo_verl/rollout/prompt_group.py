"""How the G sessions of one prompt wait for each other (asyncio only; no verl, no SKPO maths).

verl's V1 worker runs the G sessions of a prompt concurrently in one event loop. SKPO's
session 0 produces the kept segment that every session answers from, so the sessions share
one `PromptGroup` per prompt uid, held in `OPEN_GROUPS` while any of them runs:

- session 0 `publish`es the segment (one per stage with multi-split; with the spatial upstream
  baseline the pair s_a, s_b); the others wait for it with `kept_segment`;
- the first session to fail records its error with `fail`; a session waiting for the segment
  or for its own request (`unless_a_sibling_fails`) then stops at once, naming the session
  that failed, instead of waiting for something that will never come;
- `group_session(...)` wraps one session's work: it joins the group, records its failure, and
  forgets the group when the last session leaves (or, for a group that never fills up, after
  a backstop delay).

`all_or_none` is the same rule for the concurrent requests of one session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterable, Iterator
from typing import Any

logger = logging.getLogger(__name__)


class SKPORolloutError(RuntimeError):
    """A request of the prompt failed, or the server broke the generate contract."""


class PromptGroup:
    """What the G sessions of one prompt share: the kept segment of each stage and the first failure.

    With multi-split (`algorithm.skpo.num_splits` > 1) session 0 publishes one segment per stage
    k = 1, 2, ..., or None for a stage it does not run (and then none after it); with one split
    only stage 1 exists.
    """

    def __init__(self, uid: str, size: int, loop: asyncio.AbstractEventLoop):
        self.uid = uid
        self.size = size
        self._loop = loop
        self._segments: dict[int, asyncio.Future] = {}
        self.failure: asyncio.Future = loop.create_future()  # result: the first error of any session
        self.finished_sessions = 0

    @property
    def segment(self) -> asyncio.Future:
        """Stage 1's segment (the paper's single split)."""
        return self._stage(1)

    def _stage(self, stage: int) -> asyncio.Future:
        future = self._segments.get(stage)
        if future is None:
            future = self._segments[stage] = self._loop.create_future()
            if self.failure.done():
                self._fail_segment(future, *self.failure.result())
        return future

    def publish(self, segment: Any, stage: int = 1) -> None:
        """Share stage `stage`'s kept segment (None: the stage does not run)."""
        self._stage(stage).set_result(segment)

    def fail(self, session_id: int, error: BaseException) -> None:
        if not self.failure.done():
            self.failure.set_result((session_id, error))
        for future in self._segments.values():
            self._fail_segment(future, session_id, error)
        self._stage(1)  # created (and failed) if no one asked for it yet

    def _fail_segment(self, future: asyncio.Future, session_id: int, error: BaseException) -> None:
        if future.done():
            return
        future.set_exception(
            SKPORolloutError(
                f"prompt uid={self.uid}: session {session_id} failed before the kept segment was ready "
                f"({type(error).__name__}: {error})"
            )
        )
        future.exception()  # retrieved here so asyncio does not warn when no sibling is waiting

    async def kept_segment(self, timeout_s: float, stage: int = 1) -> Any:
        try:
            return await asyncio.wait_for(asyncio.shield(self._stage(stage)), timeout_s)
        except asyncio.TimeoutError:
            raise SKPORolloutError(
                f"prompt uid={self.uid}: no kept segment"
                + (f" for stage {stage}" if stage > 1 else "")
                + f" after {timeout_s:g} s (session 0 did not publish it)"
            ) from None

    async def unless_a_sibling_fails(self, session_id: int, request: Awaitable) -> Any:
        """Await `request`; cancel it and raise as soon as another session of the prompt fails."""
        task = asyncio.ensure_future(request)
        await asyncio.wait({task, self.failure}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        failed_session, error = self.failure.result()
        raise SKPORolloutError(
            f"prompt uid={self.uid}: session {session_id} stopped because session {failed_session} failed: {error!r}"
        ) from error


# The prompts being rolled out in this process's event loop, by uid.
OPEN_GROUPS: dict[str, PromptGroup] = {}


@contextlib.contextmanager
def group_session(uid: str, size: int, session_id: int, forget_after_s: float) -> Iterator[PromptGroup]:
    """One session's membership of its prompt's group: join, record a failure for the siblings, leave.

    A group whose G sessions never all arrive (a prompt run with fewer sessions than
    `size`) is forgotten `forget_after_s` seconds after it was opened, so it cannot leak.
    """
    group = _join(uid, size, forget_after_s)
    try:
        yield group
    except BaseException as error:
        group.fail(session_id, error)
        logger.error("skpo_agent: prompt uid=%s session %d failed: %r", uid, session_id, error)
        raise
    finally:
        _leave(group)


def _join(uid: str, size: int, forget_after_s: float) -> PromptGroup:
    group = OPEN_GROUPS.get(uid)
    if group is None:
        loop = asyncio.get_running_loop()
        group = OPEN_GROUPS[uid] = PromptGroup(uid, size, loop)
        loop.call_later(forget_after_s, _forget, group)
    return group


def _leave(group: PromptGroup) -> None:
    group.finished_sessions += 1
    if group.finished_sessions >= group.size:
        _forget(group)


def _forget(group: PromptGroup) -> None:
    if OPEN_GROUPS.get(group.uid) is group:
        del OPEN_GROUPS[group.uid]


async def all_or_none(requests: Iterable[Awaitable]) -> list:
    """Run requests concurrently; on the first failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(request) for request in requests]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
