"""Run blocking or CPU-bound calls off the event loop, on bounded pools of your own.

    pool = BlockingPool("argon2", max_workers=2, max_queue=64)
    async with pool:
        digest = await pool.run(hasher.hash, password)   # typed: returns what hash returns
        pool.stats()   # PoolStats(name='argon2', max_workers=2, ..., in_use=0, queued=0, ...)

    async with CpuPool("reports", max_workers=2, max_queue=16) as cpu:
        totals = await cpu.run(summarise, rows)          # in another process

``BlockingPool`` is for calls that wait (file and socket I/O, C code that releases the
GIL, such as argon2). ``CpuPool`` is for pure-Python computation: a thread running Python
bytecode holds the GIL, so it slows the loop's thread down instead of running beside it;
only another process gets a core of its own. Its functions and arguments must pickle
(module-level functions), and a call costs an inter-process round trip (~0.1 ms), so use it
for work of milliseconds and more.

The issue's ``run_blocking(fn, ...)`` and ``run_cpu(fn, ...)`` are ``blocking.run(fn, ...)``
and ``cpu.run(fn, ...)`` on pools the application owns (the service keeps them in its
lifespan state). A module-level ``run_blocking`` would need a process-global pool, which is
the shared, unmonitored default executor again under another name.

Why not ``asyncio.to_thread``: it uses the loop's default executor, shared by everything
(min(32, cores + 4) threads), unbounded in its queue and invisible to metrics. One slow
dependency fills it and every other ``to_thread`` caller waits behind it. Each
``BlockingPool`` owns its executor, so one kind of work cannot starve another.

Bounds: at most ``max_workers`` calls run at once; up to ``max_queue`` callers wait for a
worker, in arrival order, for as long as the deadline in force allows
(:func:`loopwise.patterns.deadlines.time_left`). A full queue, or no worker free in time,
raises :class:`PoolSaturated` at once, so an overloaded service sheds instead of piling up.

Cancellation: a caller cancelled while waiting leaves the queue at once. A caller cancelled
while its call runs stops waiting at once too, but Python cannot stop a thread (nor, safely,
a process mid-call): the call runs to completion and its result is dropped. Its worker stays
counted in ``in_use`` until it really finishes, so ``max_workers`` is a true bound on the
threads or processes busy with this pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import multiprocessing
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, Self, TypeVar

from loopwise.patterns.deadlines import time_left
from loopwise.patterns.exceptions import ClosedResource, PoolSaturated
from loopwise.patterns.lifecycle import AsyncResource

__all__ = ["BlockingPool", "CpuPool", "PoolStats"]

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


class _BoundedPool(AsyncResource):
    """The bounds, queue, stats and lifecycle both pools share; calls run on its threads."""

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
        await self._shutdown()

    async def _shutdown(self) -> None:
        # Every call has finished: the threads are idle and exit without being joined.
        self._executor.shutdown(wait=False)

    async def __aenter__(self) -> Self:
        self._check_open()
        return self


class BlockingPool(_BoundedPool):
    """A bounded thread pool for blocking calls, owned by whoever made it.

    Args:
        name: names the pool in errors and stats, e.g. ``"argon2"``.
        max_workers: threads, and so calls running at once.
        max_queue: callers allowed to wait for a worker; beyond it calls fail fast.
    """

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


class CpuPool(_BoundedPool):
    """A bounded process pool for CPU-bound pure-Python calls.

    Processes start with ``spawn`` (a fresh interpreter): forking a process that runs
    threads, as a service does, can copy a lock another thread holds and deadlock the
    child. Each call is handed over by one of the pool's threads, which also waits for the
    result; so submitting (a pipe write, and the first time a process start) never blocks
    the loop, and the bounds and stats work exactly as in :class:`BlockingPool`.

    Args:
        name: names the pool in errors and stats.
        max_workers: processes, and so calls running at once; about one per core.
        max_queue: callers allowed to wait for a worker; beyond it calls fail fast.
    """

    def __init__(self, name: str, *, max_workers: int, max_queue: int) -> None:
        super().__init__(name, max_workers=max_workers, max_queue=max_queue)
        # Made on first use, in one of our threads: making it starts multiprocessing's
        # resource tracker, a process of its own, which would block the loop.
        self._processes: ProcessPoolExecutor | None = None
        self._processes_lock = threading.Lock()

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)`` in a worker process and return its result.

        Raises:
            PoolSaturated: the queue was full, or no worker freed up before the deadline.
            ClosedResource: the pool was closed.
            Exception: whatever ``fn`` raised; the worker's traceback is its ``__cause__``.
        """
        return await self._call(self._in_process, fn, *args, **kwargs)

    def _in_process(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        with self._processes_lock:
            if self._processes is None:
                self._processes = ProcessPoolExecutor(
                    self._max_workers, mp_context=multiprocessing.get_context("spawn")
                )
            processes = self._processes
        return processes.submit(fn, *args, **kwargs).result()

    async def _shutdown(self) -> None:
        if self._processes is not None:
            # Joining the processes blocks, so one of our own threads does it.
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._processes.shutdown)
        await super()._shutdown()
