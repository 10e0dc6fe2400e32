"""LoopWatchdog: a heartbeat the loop keeps itself, one log per stall naming the blocking code."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, MutableMapping
from typing import Any

import pytest
import structlog
from blockbuster import BlockBuster

from loopwise.patterns import LoopWatchdog, ResourceClosed, watchdog

BOTH_LOOPS = pytest.mark.asyncio(loop_factories=["asyncio", "uvloop"])


class LogEvents:
    """A structlog logger whose events reach the test's loop; a flag is raised on a stall."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        self.stalled = threading.Event()

        def forward(_: Any, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
            if event["event"] == "event_loop_stalled":
                self.stalled.set()
            loop.call_soon_threadsafe(self.queue.put_nowait, event)
            raise structlog.DropEvent

        self.logger = structlog.wrap_logger(
            None, processors=[forward], wrapper_class=structlog.BoundLogger
        )

    async def next(self) -> MutableMapping[str, Any]:
        return await self.queue.get()


def block_the_loop(stalled: threading.Event, extra: float) -> None:
    """Hold the loop until the watchdog has seen it stalled, then a while longer."""
    give_up = time.monotonic() + 30
    while not stalled.is_set() and time.monotonic() < give_up:
        time.sleep(0.005)
    time.sleep(extra)


@pytest.fixture
def sleep_allowed(blockbuster: BlockBuster) -> None:
    """This module's deliberate blocker may call time.sleep on the loop; nothing else may."""
    blockbuster.functions["time.sleep"].can_block_in(__file__, "block_the_loop")


@BOTH_LOOPS
@pytest.mark.blocks_loop
@pytest.mark.usefixtures("sleep_allowed")
async def test_stall_is_logged_once_with_the_blocking_function() -> None:
    """A stall is logged once, naming the blocking function, then its end with the duration."""
    events = LogEvents()
    lags: list[float] = []
    watchdog = LoopWatchdog(threshold=0.1, interval=0.01, logger=events.logger, on_lag=lags.append)
    async with watchdog:
        block_the_loop(events.stalled, extra=0.4)  # four thresholds more: still one report
        # A hiccup of the shared test machine may be logged first: skip to ours.
        stalled = await events.next()
        while "in block_the_loop\n" not in stalled.get("stack", ""):
            stalled = await events.next()
        ended = await events.next()  # next after ours: no second report of the same stall
        stats = watchdog.stats()
    assert stalled["event"] == "event_loop_stalled"
    # The innermost frame is blockbuster's time.sleep wrapper in tests; the caller is next.
    assert stalled["blocking_in"]
    assert "in block_the_loop\n    time.sleep(" in stalled["stack"]
    assert "test_stall_is_logged_once_with_the_blocking_function" in stalled["stack"]
    assert stalled["threshold_ms"] == 100.0
    assert ended["event"] == "event_loop_stall_ended"
    assert ended["duration_ms"] >= 500.0  # waited for the stall report, then slept 0.4 s
    assert stats.stalls >= 1
    assert not stats.stalled
    assert stats.max >= 0.5
    assert max(lags) == stats.max
    assert sum(stats.counts[stats.buckets.index(0.5) :]) >= 1  # the stall's own sample
    assert sum(stats.counts) == stats.count


@pytest.mark.virtual_time
async def test_the_loop_beats_on_its_own_timer() -> None:
    """One heartbeat per interval, timed by the loop itself: it follows the loop's clock."""
    lags: list[float] = []
    async with LoopWatchdog(interval=0.05, on_lag=lags.append) as dog:
        await asyncio.sleep(1.025)  # virtual: beats at 0.05, 0.10, ..., 1.00
        stats = dog.stats()
    assert stats.count == len(lags) == 20
    assert sum(stats.counts) == 20
    assert stats.stalls == 0


async def test_no_wakeup_from_another_thread() -> None:
    """In the common case the thread never wakes the loop: no call_soon_threadsafe."""
    loop = asyncio.get_running_loop()
    calls: list[Any] = []
    threadsafe = loop.call_soon_threadsafe

    def counting(callback: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(callback)
        return threadsafe(callback, *args, **kwargs)

    async with LoopWatchdog(threshold=0.02, interval=0.005) as dog:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(loop, "call_soon_threadsafe", counting)
            # Long enough for the thread to look at the heartbeat many times (>= 0.02 s each).
            await asyncio.sleep(0.5)
        beats = dog.stats().count
    assert beats >= 1  # a lower bound only: a loaded machine runs timers late, never early
    assert calls == []


@BOTH_LOOPS
async def test_stops_its_thread() -> None:
    """Closing the watchdog ends its thread; it cannot be restarted."""
    dog = LoopWatchdog(interval=0.01)
    async with dog:
        assert any(t.name == "loopwise-watchdog" for t in threading.enumerate())
    for thread in threading.enumerate():
        if thread.name == "loopwise-watchdog":
            await asyncio.to_thread(thread.join, 10)
            assert not thread.is_alive()
    await dog.aclose()
    with pytest.raises(ResourceClosed):
        async with dog:
            pass


async def test_refuses_to_start_twice() -> None:
    """A running watchdog cannot be entered again."""
    async with LoopWatchdog() as dog:
        with pytest.raises(ResourceClosed, match="Cannot reopen"):
            await dog.__aenter__()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 0}, "`threshold` must be positive"),
        ({"interval": -1}, "`interval` must be positive"),
        ({"buckets": (0.1, 0.01)}, "`buckets` must be"),
    ],
)
def test_settings_are_validated(kwargs: dict[str, Any], message: str) -> None:
    """Nonsense settings are refused with a message naming the parameter."""
    with pytest.raises(ValueError, match=message):
        LoopWatchdog(**kwargs)


def test_public_names_are_pinned() -> None:
    """The module exports exactly its public names."""
    assert watchdog.__all__ == ["DEFAULT_LAG_BUCKETS", "LagStats", "LoopWatchdog"]
