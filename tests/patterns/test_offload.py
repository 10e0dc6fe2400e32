"""BlockingPool and CpuPool: bounds, saturation within the deadline, cancellation, close."""

from __future__ import annotations

import asyncio
import contextvars
import multiprocessing
import os
import threading
import traceback
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.managers import SyncManager
from typing import Any

import pytest

import loopwise.patterns
from loopwise.patterns import (
    DEADLINE_MARGIN,
    BlockingPool,
    CpuPool,
    PatternError,
    PoolSaturated,
    ResourceClosed,
    Saturated,
    fail_after,
    offload,
)
from tests.patterns.cpu_work import busy_interval, die, divide, pid, wait_for


class Gate:
    """Workers report arrival to the loop, then block (in their thread) until opened."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._opened = threading.Event()
        self._lock = threading.Lock()
        self.arrived: asyncio.Queue[str] = asyncio.Queue()
        self.running = 0
        self.max_running = 0

    def work(self, label: str) -> str:
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        self._loop.call_soon_threadsafe(self.arrived.put_nowait, label)
        try:
            self._opened.wait(timeout=60)
        finally:
            with self._lock:
                self.running -= 1
        return label

    async def wait_arrivals(self, count: int) -> list[str]:
        return [await self.arrived.get() for _ in range(count)]

    def open(self) -> None:
        self._opened.set()


def fail_loudly(message: str) -> None:
    raise ValueError(message)


async def test_never_more_than_max_workers_at_once() -> None:
    """Six calls on two workers: two run, four wait in order, and at most two ever overlap."""
    gate = Gate()
    async with BlockingPool("bounded", max_workers=2, max_queue=8) as pool:
        calls = [asyncio.create_task(pool.run(gate.work, str(i))) for i in range(6)]
        assert sorted(await gate.wait_arrivals(2)) == ["0", "1"]
        stats = pool.stats()
        assert (stats.in_use, stats.queued) == (2, 4)
        gate.open()
        assert await asyncio.gather(*calls) == [str(i) for i in range(6)]
        assert gate.max_running == 2
        stats = pool.stats()
        assert (stats.in_use, stats.queued, stats.completed, stats.rejected) == (0, 0, 6, 0)


async def test_runs_on_its_own_named_threads() -> None:
    """Calls run on the pool's own threads, not the loop's default executor."""
    async with BlockingPool("argon2", max_workers=1, max_queue=0) as pool:
        name = await pool.run(lambda: threading.current_thread().name)
    assert name.startswith("loopwise-argon2")


async def test_passes_arguments_and_context() -> None:
    """Positional and keyword arguments reach the call; so do the caller's context variables."""
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    request_id.set("r-42")

    def describe(prefix: str, *, suffix: str) -> str:
        return f"{prefix}{request_id.get()}{suffix}"

    async with BlockingPool("ctx", max_workers=1, max_queue=1) as pool:
        assert await pool.run(describe, "<", suffix=">") == "<r-42>"


async def test_exception_propagates_with_its_traceback() -> None:
    """An error raised in the worker reaches the caller with the worker's frames in it."""
    async with BlockingPool("errors", max_workers=1, max_queue=1) as pool:
        with pytest.raises(ValueError, match="boom") as caught:
            await pool.run(fail_loudly, "boom")
        assert pool.stats().completed == 1
        assert pool.stats().in_use == 0
    frames = [frame.name for frame in traceback.extract_tb(caught.value.__traceback__)]
    assert "fail_loudly" in frames


async def test_full_queue_fails_fast() -> None:
    """With every worker busy and the queue full, a call is refused at once."""
    gate = Gate()
    async with BlockingPool("tiny", max_workers=1, max_queue=1) as pool:
        running = asyncio.create_task(pool.run(gate.work, "running"))
        await gate.wait_arrivals(1)
        waiting = asyncio.create_task(pool.run(gate.work, "waiting"))
        await asyncio.sleep(0)  # let it join the queue
        assert pool.stats().queued == 1
        with pytest.raises(PoolSaturated) as caught:
            await pool.run(gate.work, "refused")
        assert caught.value.reason == "queue_full"
        assert caught.value.resource == "tiny"
        assert pool.stats().rejected == 1
        gate.open()
        assert list(await asyncio.gather(running, waiting)) == ["running", "waiting"]


@pytest.mark.virtual_time
async def test_waiting_is_bounded_by_the_deadline() -> None:
    """No worker frees up: the call raises Saturated exactly the margin before the deadline."""
    gate = Gate()
    loop = asyncio.get_running_loop()
    async with BlockingPool("slow", max_workers=1, max_queue=4) as pool:
        running = asyncio.create_task(pool.run(gate.work, "running"))
        await gate.wait_arrivals(1)
        started = loop.time()
        async with fail_after(0.2):
            with pytest.raises(Saturated) as caught:
                await pool.run(gate.work, "too late")
        # Virtual time: the worker's thread stays blocked, so the clock jumps to the end.
        assert loop.time() - started == pytest.approx(0.2 - DEADLINE_MARGIN, abs=1e-9)
        assert isinstance(caught.value, PoolSaturated)
        assert caught.value.reason == "no_worker_in_time"
        assert isinstance(caught.value, PatternError)
        stats = pool.stats()
        assert (stats.queued, stats.rejected, stats.in_use) == (0, 1, 1)
        gate.open()
        assert await running == "running"


async def test_cancelled_waiter_leaves_the_queue() -> None:
    """A caller cancelled while queued is gone from the queue at once; its call never runs."""
    gate = Gate()
    async with BlockingPool("queue", max_workers=1, max_queue=4) as pool:
        running = asyncio.create_task(pool.run(gate.work, "running"))
        await gate.wait_arrivals(1)
        waiting = asyncio.create_task(pool.run(gate.work, "never"))
        await asyncio.sleep(0)
        assert pool.stats().queued == 1
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert pool.stats().queued == 0
        gate.open()
        assert await running == "running"
    assert pool.stats().completed == 1


async def test_cancelled_caller_stops_waiting_but_the_thread_finishes() -> None:
    """Cancelling a running call returns at once; its worker stays in use until it finishes."""
    gate = Gate()
    pool = BlockingPool("cancel", max_workers=1, max_queue=4)
    await pool.open()
    call = asyncio.create_task(pool.run(gate.work, "abandoned"))
    await gate.wait_arrivals(1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert pool.stats().in_use == 1  # the thread still runs: the bound still counts it
    gate.open()
    await pool.aclose()  # waits for the thread
    stats = pool.stats()
    assert (stats.in_use, stats.completed) == (0, 1)
    assert gate.running == 0


async def test_closed_pool_refuses_work() -> None:
    """Before open and after aclose calls raise ResourceClosed; it never reopens."""
    pool = BlockingPool("closed", max_workers=1, max_queue=1)
    with pytest.raises(ResourceClosed, match="unopened"):
        await pool.run(len, "abc")
    async with pool:
        assert await pool.run(len, "abc") == 3
    with pytest.raises(ResourceClosed, match="closed"):
        await pool.run(len, "abc")
    with pytest.raises(ResourceClosed):
        async with pool:
            pass
    await pool.aclose()


async def test_close_wakes_waiters_and_waits_for_running_calls() -> None:
    """Closing fails queued callers with ResourceClosed and lets running calls finish."""
    gate = Gate()
    pool = BlockingPool("closing", max_workers=1, max_queue=4)
    await pool.open()
    running = asyncio.create_task(pool.run(gate.work, "running"))
    await gate.wait_arrivals(1)
    waiting = asyncio.create_task(pool.run(gate.work, "queued"))
    await asyncio.sleep(0)
    closing = asyncio.create_task(pool.aclose())
    with pytest.raises(ResourceClosed):
        await waiting
    assert not closing.done()
    gate.open()
    await closing
    assert await running == "running"
    assert pool.stats().in_use == 0


@pytest.mark.parametrize(
    ("workers", "queue", "message"),
    [(0, 1, "`max_workers` must be positive"), (1, -1, "`max_queue` must not be negative")],
)
def test_bounds_are_validated(workers: int, queue: int, message: str) -> None:
    """Bounds that make no sense are refused with a message naming the parameter."""
    with pytest.raises(ValueError, match=message):
        BlockingPool("bad", max_workers=workers, max_queue=queue)


def test_public_names_are_pinned() -> None:
    """The module exports exactly its public names, all re-exported by the package."""
    assert offload.__all__ == ["BlockingPool", "CpuPool", "PoolStats"]
    assert set(offload.__all__) <= set(loopwise.patterns.__all__)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        running += step
        peak = max(peak, running)
    return peak


async def test_cpu_pool_runs_in_other_processes_within_its_bound() -> None:
    """CpuPool runs calls in worker processes, never more than max_workers at a time."""
    async with CpuPool("cpu", max_workers=2, max_queue=8) as pool:
        results = await asyncio.gather(*(pool.run(busy_interval, 200_000) for _ in range(6)))
        stats = pool.stats()
    pids = {pid for pid, _, _ in results}
    assert os.getpid() not in pids
    assert len(pids) <= 2
    assert max_overlap([(start, end) for _, start, end in results]) <= 2
    assert (stats.in_use, stats.queued, stats.completed) == (0, 0, 6)


async def test_cpu_pool_propagates_errors_with_the_remote_traceback() -> None:
    """An error in the worker process reaches the caller; its traceback names the function."""
    async with CpuPool("cpu-errors", max_workers=1, max_queue=1) as pool:
        with pytest.raises(ZeroDivisionError) as caught:
            await pool.run(divide, 1, 0)
        assert await pool.run(divide, 1, 2) == 0.5
    assert "in divide" in str(caught.value.__cause__)


async def test_cpu_pool_outlives_a_killed_worker_process() -> None:
    """A worker killed mid-call fails that call; the next call runs in a fresh process."""
    async with CpuPool("cpu-killed", max_workers=1, max_queue=1) as pool:
        before = await pool.run(pid)
        with pytest.raises(BrokenProcessPool):
            await pool.run(die)
        after = await pool.run(pid)
        assert await pool.run(divide, 1, 2) == 0.5
        stats = pool.stats()
    assert after != before
    assert (stats.in_use, stats.queued) == (0, 0)


async def test_cpu_pool_refuses_work_after_close() -> None:
    """A closed CpuPool raises ResourceClosed."""
    pool = CpuPool("cpu-closed", max_workers=1, max_queue=0)
    await pool.aclose()
    with pytest.raises(ResourceClosed):
        await pool.run(divide, 1, 2)


def shared_events() -> tuple[SyncManager, Any, Any]:
    """Two events worker processes can take as arguments (a manager process serves them)."""
    manager = multiprocessing.get_context("spawn").Manager()  # starts its process
    return manager, manager.Event(), manager.Event()


async def test_cpu_pool_cancelled_caller_stops_waiting() -> None:
    """Cancelling a CpuPool call returns at once; its worker counts until the call ends."""
    manager, release, started = await asyncio.to_thread(shared_events)
    try:
        pool = CpuPool("cpu-cancel", max_workers=1, max_queue=0)
        await pool.open()
        call = asyncio.create_task(pool.run(wait_for, release, started))
        assert await asyncio.to_thread(started.wait, 60)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert pool.stats().in_use == 1
        with pytest.raises(PoolSaturated):  # the bound still holds the running call
            await pool.run(divide, 1, 2)
        await asyncio.to_thread(release.set)
        await pool.aclose()
        assert (pool.stats().in_use, pool.stats().completed) == (0, 1)
    finally:
        await asyncio.to_thread(manager.shutdown)
