"""Run blocking calls off the event loop on a bounded pool of your own, with stats.

    pool = BlockingPool("argon2", max_workers=2, max_queue=64)
    async with pool:
        digest = await pool.run(hasher.hash, password)   # typed: returns what hash returns
        pool.stats()   # PoolStats(name='argon2', max_workers=2, ..., in_use=0, queued=0, ...)

Why not ``asyncio.to_thread``: it uses the loop's default executor, shared by everything
(min(32, cores + 4) threads), unbounded in its queue and invisible to metrics. One slow
dependency fills it and every other ``to_thread`` caller waits behind it. Each
``BlockingPool`` owns its executor, so one kind of work cannot starve another.

Bounds: at most ``max_workers`` calls run at once; up to ``max_queue`` callers wait for a
worker, in arrival order, for as long as the deadline in force allows
(:func:`loopwise.patterns.deadlines.time_left`). A full queue, or no worker free in time,
raises :class:`PoolSaturated` at once, so an overloaded service sheds instead of piling up.

Cancellation: a caller cancelled while waiting leaves the queue at once. A caller cancelled
while its call runs stops waiting at once too, but Python cannot stop a thread: the call
runs to completion and its result is dropped. Its worker stays counted in ``in_use`` until
it really finishes, so ``max_workers`` is a true bound on threads busy with this pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

from loopwise.patterns.deadlines import time_left
from loopwise.patterns.exceptions import ClosedResource, PoolSaturated

__all__ = ["BlockingPool", "PoolStats"]

P = ParamSpec("P")
T = TypeVar("T")

# A waiter gives up this long before the deadline. Were it to wait until the deadline
# itself, the deadline's cancellation would race it and the caller would see
# DeadlineExceeded instead of the cause, PoolSaturated; and a worker won with less time
# left than this could not return a result the caller is still there to take.
_DEADLINE_RESERVE = 0.005


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of one pool; the service turns it into metrics.

    ``rejected`` and ``completed`` count since the pool was made; ``completed`` counts
    calls that finished in a worker, whether they returned or raised.
    """

    name: str
    max_workers: int
    max_queue: int
    in_use: int
    queued: int
    rejected: int
    completed: int


class _State(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


class BlockingPool:
    """A bounded thread pool for blocking calls, owned by whoever made it.

    Args:
        name: names the pool in errors and stats, e.g. ``"argon2"``.
        max_workers: threads, and so calls running at once.
        max_queue: callers allowed to wait for a worker; beyond it calls fail fast.
    """

    def __init__(self, name: str, *, max_workers: int, max_queue: int) -> None:
        if max_workers <= 0:
            raise ValueError(f"`max_workers` must be positive, got {max_workers}")
        if max_queue < 0:
            raise ValueError(f"`max_queue` must not be negative, got {max_queue}")
        self._name = name
        self._max_workers = max_workers
        self._max_queue = max_queue
        self._state = _State.OPEN
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix=f"loopwise-{name}")
        # Invariant: 0 <= _in_use <= _max_workers, counting calls submitted and not yet
        # finished in a thread (even when their caller was cancelled).
        self._in_use = 0
        # Callers waiting for a worker, oldest first; a freed worker is handed to the
        # first one by resolving its future, so _in_use does not change in a hand-off.
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._rejected = 0
        self._completed = 0
        self._drained: asyncio.Future[None] | None = None

    @property
    def name(self) -> str:
        return self._name

    def stats(self) -> PoolStats:
        return PoolStats(
            name=self._name,
            max_workers=self._max_workers,
            max_queue=self._max_queue,
            in_use=self._in_use,
            queued=len(self._waiters),
            rejected=self._rejected,
            completed=self._completed,
        )

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)`` in a worker thread and return its result.

        The call sees the caller's context variables (like ``asyncio.to_thread``).

        Raises:
            PoolSaturated: the queue was full, or no worker freed up before the deadline.
            ClosedResource: the pool was closed.
            Exception: whatever ``fn`` raised, with its traceback.
        """
        context = contextvars.copy_context()
        return await self._call(context.run, fn, *args, **kwargs)

    async def _call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        self._check_open()
        await self._acquire()
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[T] = loop.create_future()
        try:
            work = self._executor.submit(fn, *args, **kwargs)
        except BaseException:
            self._release()
            raise

        def finished(work: Future[T]) -> None:
            # Runs in the worker thread; everything else happens on the loop.
            # RuntimeError: the loop is closed and nobody is left to take the result; only
            # reachable when the owner closed its loop without aclose(), which waits.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._finish, work, outcome)

        work.add_done_callback(finished)
        try:
            return await outcome
        except asyncio.CancelledError:
            work.cancel()  # stops it only if no thread has picked it up yet
            raise

    def _finish(self, work: Future[T], outcome: asyncio.Future[T]) -> None:
        if not work.cancelled():
            self._completed += 1
        self._release()
        if outcome.done():  # the caller was cancelled and stopped waiting
            return
        if work.cancelled():
            outcome.cancel()
        elif (error := work.exception()) is not None:
            outcome.set_exception(error)
        else:
            outcome.set_result(work.result())

    async def _acquire(self) -> None:
        if self._in_use < self._max_workers and not self._waiters:
            self._in_use += 1
            return
        if len(self._waiters) >= self._max_queue:
            self._rejected += 1
            raise PoolSaturated(self._name, "queue_full")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        left = time_left()
        try:
            async with asyncio.timeout(None if left is None else left - _DEADLINE_RESERVE):
                await waiter
        except TimeoutError:
            self._give_back(waiter)
            self._rejected += 1
            raise PoolSaturated(self._name, "no_worker_in_time") from None
        except BaseException:
            self._give_back(waiter)
            raise
        if self._state is _State.CLOSED:
            self._release()
            self._check_open()

    def _give_back(self, waiter: asyncio.Future[None]) -> None:
        """Leave the queue; pass on a worker handed to us just before we stopped waiting."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            self._release()
        elif waiter in self._waiters:
            waiter.cancel()
            self._waiters.remove(waiter)

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the worker passes to it; _in_use unchanged
                return
        self._in_use -= 1
        if self._in_use == 0 and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _check_open(self) -> None:
        if self._state is _State.CLOSED:
            raise ClosedResource(self._name, f"pool {self._name!r} is closed")

    async def aclose(self) -> None:
        """Refuse new calls, wake waiters with ClosedResource, wait for running calls.

        Calls already running in threads finish first (threads cannot be interrupted);
        closing twice is harmless.
        """
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ClosedResource(self._name, f"pool {self._name!r} closed"))
        if self._in_use:
            self._drained = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._drained)
        # Every call has finished: the threads are idle and exit without being joined.
        self._executor.shutdown(wait=False)

    async def __aenter__(self) -> Self:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
