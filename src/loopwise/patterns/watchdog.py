"""A heartbeat the event loop keeps and a thread that names the code blocking it.

    async with LoopWatchdog(threshold=0.1) as watchdog:   # from inside the loop to watch
        ...                                              # serve
        watchdog.stats()   # LagStats(count=..., max=..., stalls=..., buckets=..., ...)

The loop times itself: every ``interval`` a timer of its own (``call_later``, no wake-up
from another thread) runs a tiny callback that reads the clock, records how late it ran
(the lag every request feels, kept as a histogram) and schedules the next one. That is
the heartbeat.

A blocked loop cannot report its own stall, and asyncio's slow-callback report (debug
mode) exists neither under uvloop nor in production. So a thread watches the heartbeat:
it sleeps until the moment the pending beat would be ``threshold`` late, reads two
attributes, and goes back to sleep, about once per ``threshold``. When the beat is that
late, the loop is stalled: the thread takes the loop thread's current stack
(``sys._current_frames()``), which is the code blocking it, and logs it once; when the
heartbeat resumes it logs how long the stall lasted.

Why not a thread that probes the loop (``call_soon_threadsafe`` each ``interval``, then
waits for the answer): per probe it takes the GIL twice, each time forcing the busy loop
to hand it over, and wakes the loop through its self-pipe. Paired rounds of the service
measured that design at a median 0.83x throughput on/off (``loopwise-bench run -s
watchdog``, load average 13 to 18). Here the loop pays one timer callback per ``interval``
(about 7 us warm) and the thread wakes about once per ``threshold``; the figures are in
docs/patterns/never-block.md. A stall is detected exactly when the pending beat is
``threshold`` late, so any stall lasting ``threshold + interval`` is seen.
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


class LoopWatchdog(AsyncResource):
    """Keep a heartbeat on the running loop and watch it from a thread; an async context manager.

    Args:
        threshold: seconds the loop may be unresponsive before it counts as stalled.
        interval: seconds between heartbeats; the lag histogram gets one sample per beat.
        buckets: the histogram's upper bounds in seconds, ascending.
        logger: a structlog logger; ``loopwise.watchdog`` by default.
        on_lag: called with each lag sample (seconds) on the loop, e.g. a metrics
            histogram's ``observe``; it must be quick.
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
        # The histogram is written on the loop and the stall state by the thread; the
        # lock keeps a snapshot consistent. Uncontended, it costs well under a microsecond.
        self._lock = threading.Lock()
        self._counts = [0] * (len(self._buckets) + 1)
        self._count = 0
        self._sum = 0.0
        self._max = 0.0
        self._stalls = 0
        self._stalled = False
        # The heartbeat, written only on the loop, read by the thread: the monotonic time
        # the pending beat is due, and the lag of the last beat that ran past threshold.
        # Each is one attribute, replaced whole, so a read never sees half an update.
        self._due = 0.0
        self._late_lag = 0.0
        self._timer: asyncio.TimerHandle | None = None
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
        self._schedule(loop, time.monotonic())
        thread = threading.Thread(
            target=self._watch,
            args=(loop, threading.get_ident(), self._exited),
            name="loopwise-watchdog",
            daemon=True,  # never holds up interpreter exit, even if aclose() was skipped
        )
        thread.start()

    async def _aclose(self) -> None:
        """Stop the heartbeat and the thread, and wait until the thread has finished."""
        if self._timer is not None:
            self._timer.cancel()
        self._stop.set()
        if self._exited is not None:
            await asyncio.shield(self._exited)

    # The heartbeat: runs on the loop.

    def _schedule(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        self._due = now + self._interval
        self._timer = loop.call_later(self._interval, self._beat, loop)

    def _beat(self, loop: asyncio.AbstractEventLoop) -> None:
        now = time.monotonic()
        # A timer may fire a little early (the selector's timeout is rounded): never < 0.
        lag = max(now - self._due, 0.0)
        if lag >= self._threshold:
            self._late_lag = lag
        with self._lock:
            self._counts[bisect.bisect_left(self._buckets, lag)] += 1
            self._count += 1
            self._sum += lag
            self._max = max(self._max, lag)
        if self._on_lag is not None:
            self._on_lag(lag)
        self._schedule(loop, now)

    # The watcher: runs in its own thread.

    def _watch(
        self, loop: asyncio.AbstractEventLoop, loop_thread: int, exited: asyncio.Future[None]
    ) -> None:
        try:
            while True:
                due = self._due
                if self._stop.wait(max(due + self._threshold - time.monotonic(), 0.0)):
                    return
                if self._due != due or time.monotonic() - due < self._threshold:
                    continue  # the loop has beaten since, or the wait ended early
                if loop.is_closed() or not self._follow_stall(loop, loop_thread, due):
                    return
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(_set_done, exited)

    def _follow_stall(self, loop: asyncio.AbstractEventLoop, loop_thread: int, due: float) -> bool:
        """Report the stall of the beat due at ``due`` and wait for its end; False to quit."""
        self._report_stall(sys._current_frames().get(loop_thread), time.monotonic() - due)
        while self._due == due:
            if self._stop.wait(self._threshold) or loop.is_closed():
                return False
        with self._lock:
            self._stalled = False
        self._log.warning(
            "event_loop_stall_ended",
            duration_ms=round(self._late_lag * 1000, 1),
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


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
