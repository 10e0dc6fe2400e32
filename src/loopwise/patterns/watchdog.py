"""A thread beside the event loop that measures its lag and names the code that blocks it.

    async with LoopWatchdog(threshold=0.1) as watchdog:   # from inside the loop to watch
        ...                                              # serve
        watchdog.stats()   # LagStats(count=..., max=..., stalls=..., buckets=..., ...)

A blocked loop cannot watch itself, and asyncio's slow-callback report (debug mode) exists
neither under uvloop nor in production. So a thread does it: every ``interval`` it asks the
loop to run a tiny callback (``call_soon_threadsafe``) and measures how late it runs. That
delay is the loop lag every request feels, kept as a histogram. When the callback has not
run after ``threshold``, the loop is stalled: the thread takes the loop thread's current
stack (``sys._current_frames()``), which is the code blocking it, and logs it once; when
the callback finally runs it logs how long the stall lasted.

Cost: one callback on the loop per ``interval`` (a clock read and an event set, a few
microseconds), and a thread that sleeps in between: far below 1% of a core at the defaults.
A stall is detected for sure when it lasts ``threshold + interval``; shorter ones above
``threshold`` are caught when a probe lands in them.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import structlog

from loopwise.patterns.lifecycle import AsyncResource

__all__ = ["DEFAULT_LAG_BUCKETS", "LagStats", "LoopWatchdog"]

# Seconds; from "unnoticeable" to "the request has timed out". 15 and 20 ms are there so
# that a lag target of "max < 20 ms" can be read off the histogram: a max in the bucket
# ending at 15 ms is under 20; one ending at 20 ms may be exactly 20.
DEFAULT_LAG_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.015,
    0.02,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
_STACK_LIMIT = 40  # innermost frames logged; the blocking call is at the bottom


@dataclass(frozen=True, slots=True)
class LagStats:
    """A snapshot of the lag histogram (seconds) and the stalls seen so far.

    ``counts[i]`` counts lags ``<= buckets[i]`` and above the bucket before (not
    cumulative); the last count, one past the buckets, is everything larger.
    """

    buckets: tuple[float, ...]
    counts: tuple[int, ...]
    count: int
    sum: float
    max: float
    stalls: int
    stalled: bool


class _Probe:
    """One heartbeat: set on the loop thread when the loop gets round to it."""

    __slots__ = ("acked", "at")

    def __init__(self) -> None:
        self.acked = threading.Event()
        self.at = 0.0

    def ack(self) -> None:  # the only code the watchdog runs on the loop
        self.at = time.monotonic()
        self.acked.set()


class LoopWatchdog(AsyncResource):
    """Watch the running loop from a thread of its own; an async context manager.

    Args:
        threshold: seconds the loop may be unresponsive before it counts as stalled.
        interval: seconds between probes; the lag histogram gets one sample per probe.
        buckets: the histogram's upper bounds in seconds, ascending.
        logger: a structlog logger; ``loopwise.watchdog`` by default.
        on_lag: called with each lag sample (seconds) in the watchdog thread, e.g. a
            metrics histogram's ``observe``; it must be quick and thread-safe.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.1,
        interval: float = 0.05,
        buckets: tuple[float, ...] = DEFAULT_LAG_BUCKETS,
        logger: Any = None,
        on_lag: Callable[[float], None] | None = None,
    ) -> None:
        if threshold <= 0:
            raise ValueError(f"`threshold` must be positive, got {threshold}")
        if interval <= 0:
            raise ValueError(f"`interval` must be positive, got {interval}")
        if not buckets or list(buckets) != sorted(set(buckets)):
            raise ValueError("`buckets` must be a non-empty, strictly ascending sequence")
        self._threshold = threshold
        self._interval = interval
        self._buckets = tuple(buckets)
        self._log = logger or structlog.get_logger(logger_name="loopwise.watchdog")
        self._on_lag = on_lag
        self._stop = threading.Event()
        # The histogram is written by the watchdog thread and read by stats() on the
        # loop: the lock keeps a snapshot's count, sum and buckets consistent.
        self._lock = threading.Lock()
        self._counts = [0] * (len(self._buckets) + 1)
        self._count = 0
        self._sum = 0.0
        self._max = 0.0
        self._stalls = 0
        self._stalled = False
        self._exited: asyncio.Future[None] | None = None

    def stats(self) -> LagStats:
        with self._lock:
            return LagStats(
                buckets=self._buckets,
                counts=tuple(self._counts),
                count=self._count,
                sum=self._sum,
                max=self._max,
                stalls=self._stalls,
                stalled=self._stalled,
            )

    @property
    def resource_name(self) -> str:
        return "watchdog"

    async def _aopen(self) -> None:
        loop = asyncio.get_running_loop()
        self._exited = loop.create_future()
        thread = threading.Thread(
            target=self._watch,
            args=(loop, threading.get_ident(), self._exited),
            name="loopwise-watchdog",
            daemon=True,  # never holds up interpreter exit, even if aclose() was skipped
        )
        thread.start()

    async def _aclose(self) -> None:
        """Stop the thread and wait until it has finished."""
        self._stop.set()
        if self._exited is not None:
            await asyncio.shield(self._exited)

    # Everything below runs in the watchdog thread.

    def _watch(
        self, loop: asyncio.AbstractEventLoop, loop_thread: int, exited: asyncio.Future[None]
    ) -> None:
        try:
            while not self._stop.wait(self._interval):
                if not self._probe(loop, loop_thread):
                    return
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(_set_done, exited)

    def _probe(self, loop: asyncio.AbstractEventLoop, loop_thread: int) -> bool:
        """Measure one heartbeat; False when the loop is gone."""
        probe = _Probe()
        sent = time.monotonic()
        try:
            loop.call_soon_threadsafe(probe.ack)
        except RuntimeError:  # closed without stopping us
            return False
        if probe.acked.wait(self._threshold):
            self._observe(probe.at - sent)
            return True
        self._report_stall(sys._current_frames().get(loop_thread), time.monotonic() - sent)
        while not probe.acked.wait(self._threshold):
            if loop.is_closed():
                return False
        duration = probe.at - sent
        self._observe(duration, stall_ended=True)
        self._log.warning(
            "event_loop_stall_ended",
            duration_ms=round(duration * 1000, 1),
            threshold_ms=round(self._threshold * 1000, 1),
        )
        return True

    def _report_stall(self, frame: FrameType | None, so_far: float) -> None:
        with self._lock:
            self._stalls += 1
            self._stalled = True
        stack = traceback.extract_stack(frame, limit=_STACK_LIMIT) if frame else None
        innermost = stack[-1] if stack else None
        self._log.warning(
            "event_loop_stalled",
            stalled_ms=round(so_far * 1000, 1),
            threshold_ms=round(self._threshold * 1000, 1),
            blocking_in=(
                f"{innermost.name} ({innermost.filename}:{innermost.lineno})" if innermost else None
            ),
            stack="".join(stack.format()) if stack else None,
        )

    def _observe(self, lag: float, *, stall_ended: bool = False) -> None:
        lag = max(lag, 0.0)
        with self._lock:
            self._counts[bisect.bisect_left(self._buckets, lag)] += 1
            self._count += 1
            self._sum += lag
            self._max = max(self._max, lag)
            if stall_ended:
                self._stalled = False
        if self._on_lag is not None:
            self._on_lag(lag)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
