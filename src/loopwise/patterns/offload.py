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

There is no module-level ``run_blocking(fn, ...)``: ``blocking.run(fn, ...)`` and
``cpu.run(fn, ...)`` run on pools the application owns (the service keeps them in its
lifespan state). A module-level one would need a process-global pool, which is the shared,
unmonitored default executor again under another name.

Why not ``asyncio.to_thread``: it uses the loop's default executor, shared by everything
(min(32, cores + 4) threads), unbounded in its queue and invisible to metrics. One slow
dependency fills it and every other ``to_thread`` caller waits behind it. Each
``BlockingPool`` owns its executor, so one kind of work cannot starve another.

Bounds: at most ``max_workers`` calls run at once; up to ``max_queue`` callers wait for a
worker, in arrival order, until :data:`~loopwise.patterns.deadlines.DEADLINE_MARGIN` before
the deadline in force. A full queue, or no worker free in time,
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
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from loopwise.patterns._slots import Slots, wait_until
from loopwise.patterns.exceptions import PoolSaturated
from loopwise.patterns.lifecycle import AsyncResource, ResourceState

__all__ = ["BlockingPool", "CpuPool", "PoolStats"]

P = ParamSpec("P")
T = TypeVar("T")


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
        self._executor: ThreadPoolExecutor | None = None
        # Workers in use: calls submitted and not yet finished in a thread (even when their
        # caller was cancelled), so max_workers bounds the threads really busy.
        self._workers = Slots(max_workers)
        self._rejected = 0
        self._completed = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def resource_name(self) -> str:
        return f"pool {self._name!r}"

    def stats(self) -> PoolStats:
        return PoolStats(
            name=self._name,
            max_workers=self._max_workers,
            max_queue=self._max_queue,
            in_use=self._workers.in_use,
            queued=self._workers.waiting,
            rejected=self._rejected,
            completed=self._completed,
        )

    async def _call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        self._check_open()
        await self._acquire()
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[T] = loop.create_future()
        try:
            assert self._executor is not None  # opened: _check_open said so
            work = self._executor.submit(fn, *args, **kwargs)
        except BaseException:
            self._workers.release()
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
        self._workers.release()
        if outcome.done():  # the caller was cancelled and stopped waiting
            return
        if work.cancelled():
            outcome.cancel()
        elif (error := work.exception()) is not None:
            outcome.set_exception(error)
        else:
            outcome.set_result(work.result())

    async def _acquire(self) -> None:
        if self._workers.try_take():
            return
        if self._workers.waiting >= self._max_queue:
            self._rejected += 1
            raise PoolSaturated(self._name, "queue_full")
        if not await self._workers.take(wait_until()):
            self._check_open()  # woken by aclose(), not by the deadline
            self._rejected += 1
            raise PoolSaturated(self._name, "no_worker_in_time")
        if self.state is not ResourceState.OPENED:  # handed a worker as the pool closed
            self._workers.release()
            self._check_open()

    async def _aopen(self) -> None:
        self._executor = ThreadPoolExecutor(
            self._max_workers, thread_name_prefix=f"loopwise-{self._name}"
        )

    async def _aclose(self) -> None:
        """Refuse new calls, fail waiting callers with ResourceClosed, wait for running calls.

        Calls already running in threads finish first (threads cannot be interrupted).
        """
        self._workers.refuse_waiting()
        await self._workers.wait_idle()
        await self._shutdown()

    async def _shutdown(self) -> None:
        # Every call has finished: the threads are idle and exit without being joined.
        if self._executor is not None:
            self._executor.shutdown(wait=False)


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
            ResourceClosed: the pool is not open.
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

    A worker process that dies (the OOM killer, a crash in C code) fails the calls it was
    running and any others then in flight with ``BrokenProcessPool``, as
    ``ProcessPoolExecutor`` does; the next call starts fresh processes instead of failing
    for ever after.

    Args:
        name: names the pool in errors and stats.
        max_workers: processes, and so calls running at once; about one per core.
        max_queue: callers allowed to wait for a worker; beyond it calls fail fast.
        initializer: a module-level function each worker process calls once as it starts.
    """

    def __init__(
        self,
        name: str,
        *,
        max_workers: int,
        max_queue: int,
        initializer: Callable[[], object] | None = None,
    ) -> None:
        super().__init__(name, max_workers=max_workers, max_queue=max_queue)
        self._initializer = initializer
        # Made on first use, in one of our threads: making it starts multiprocessing's
        # resource tracker, a process of its own, which would block the loop.
        self._processes: ProcessPoolExecutor | None = None
        self._processes_lock = threading.Lock()

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)`` in a worker process and return its result.

        Raises:
            PoolSaturated: the queue was full, or no worker freed up before the deadline.
            ResourceClosed: the pool is not open.
            Exception: whatever ``fn`` raised; the worker's traceback is its ``__cause__``.
            BrokenProcessPool: a worker process died while this call was in flight.
        """
        return await self._call(self._in_process, fn, *args, **kwargs)

    def _in_process(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        with self._processes_lock:
            if self._processes is None:
                self._processes = ProcessPoolExecutor(
                    self._max_workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=self._initializer,
                )
            processes = self._processes
        try:
            return processes.submit(fn, *args, **kwargs).result()
        except BrokenProcessPool:
            with self._processes_lock:
                if self._processes is processes:  # not already replaced by another call
                    self._processes = None
            # Its survivors were terminated by the executor; joining them blocks, so here.
            processes.shutdown(wait=True)
            raise

    async def _shutdown(self) -> None:
        if self._processes is not None:
            # Joining the processes blocks, so one of our own threads does it.
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._processes.shutdown)
        await super()._shutdown()
