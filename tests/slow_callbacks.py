"""A pytest plugin for ``scripts/check-loop``: fail any test whose loop ran a slow callback.

Every callback and task step the loop runs is timed; one that held the loop for
``SLOW_CALLBACK`` seconds or more is a blocking call, or CPU work that belongs in a pool,
and fails the test with the callback's name.

A step's time is its wall time minus the time its thread spent runnable but waiting for a
CPU, which Linux reports per thread in ``/proc/thread-self/schedstat``. On a shared 2-core
machine the kernel parks a busy process for a few hundred milliseconds in the middle of
any step; that is the machine's load, not the step's, and asyncio's own debug warning
(wall time alone) then blames whichever step it lands in. A sleep or a blocking read still
counts in full: the thread is not waiting for a CPU then. Where the file does not exist
(not Linux), wall time alone is used.

The threshold is 0.25 s, not asyncio's 0.1 s: debug mode (which check-loop turns on for
its other checks) records a creation stack for every task and handle, which makes each
step several times slower than in production. 0.25 s under debug mode is roughly 50-80 ms
of real time, still far below any blocking call worth catching (a sleep, a synchronous HTTP
request, an argon2 hash at production cost).

Only the test's call phase counts: the requests and the code under test. Fixture set-up
and tear-down (app start-up and shutdown, cloning a database) run once per process in
production, before it serves; the watchdog covers start-up there.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager

import pytest

SLOW_CALLBACK = 0.25  # seconds; see the module docstring
_SCHEDSTAT = "/proc/thread-self/schedstat"


@contextmanager
def cpu_wait_clock() -> Iterator[Callable[[], float]]:
    """A clock of the seconds the calling thread has waited for a CPU (0 where unknown).

    The file is opened once, here, and read with ``os.pread``: the reads happen on the
    loop, where opening a file would itself be a blocking call to report.
    """
    try:
        fd = os.open(_SCHEDSTAT, os.O_RDONLY)
    except OSError:
        yield lambda: 0.0
        return
    try:
        # Fields: time on a CPU, time waiting on a run queue (both ns), time slices.
        yield lambda: int(os.pread(fd, 64, 0).split()[1]) / 1e9
    finally:
        os.close(fd)


@contextmanager
def timing_steps(
    on_slow: Callable[[str, float], None], cpu_wait: Callable[[], float]
) -> Iterator[None]:
    """Time every loop step run on this thread; call ``on_slow(step, seconds)`` for slow ones.

    ``cpu_wait`` is :func:`cpu_wait_clock`'s clock, for this thread.
    """
    original = asyncio.events.Handle._run
    owner = threading.get_ident()

    def timed(handle: asyncio.Handle) -> None:
        if threading.get_ident() != owner:  # another thread's loop: its clock is not ours
            original(handle)
            return
        started, waited = time.perf_counter(), cpu_wait()
        try:
            original(handle)
        finally:
            held = time.perf_counter() - started - (cpu_wait() - waited)
            if held >= SLOW_CALLBACK:
                on_slow(_describe(handle), held)

    asyncio.events.Handle._run = timed  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        asyncio.events.Handle._run = original  # type: ignore[method-assign]


def _describe(handle: asyncio.Handle) -> str:
    # A task's step is a bound method of the task: name the task (its coroutine), as
    # asyncio's own debug warning does.
    task = getattr(handle._callback, "__self__", None)  # type: ignore[attr-defined]
    return repr(task) if isinstance(task, asyncio.Task) else repr(handle)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    # Start from a collected heap: debug mode keeps a stack for every task and handle, so
    # a full collection can pause well past 0.1 s inside whichever step it lands in. That
    # is a pause, not blocking code; a blocking call still shows.
    gc.collect()
    seen: list[str] = []
    with (
        cpu_wait_clock() as cpu_wait,
        timing_steps(lambda step, held: seen.append(f"{step}: {held:.3f} s"), cpu_wait),
    ):
        result = yield
    if seen:
        pytest.fail("the event loop was blocked:\n" + "\n".join(seen), pytrace=False)
    return result
