"""The circuit breaker: opens on a failure ratio, fails fast, half-opens, closes or reopens.

On virtual time: ``await asyncio.sleep(5.0)`` moves the loop's clock (the breaker's) at once.
"""

from __future__ import annotations

import asyncio

import pytest

from loopwise.patterns import CircuitBreaker, CircuitOpen, CircuitState

pytestmark = pytest.mark.virtual_time

Change = tuple[str, CircuitState, CircuitState]


def _breaker(changes: list[Change], **kwargs: float) -> CircuitBreaker:
    options: dict[str, float] = {"failure_ratio": 0.5, "min_calls": 10, "cool_down": 5.0}
    options.update(kwargs)
    return CircuitBreaker(
        "loyalty",
        failure_ratio=options["failure_ratio"],
        min_calls=int(options["min_calls"]),
        cool_down=options["cool_down"],
        probes=int(options.get("probes", 1)),
        on_state_change=lambda *change: changes.append(change),
    )


def _record(breaker: CircuitBreaker, ok: bool) -> None:
    with breaker.attempt() as attempt:
        if not ok:
            attempt.fail()


def _open(breaker: CircuitBreaker) -> None:
    for _ in range(10):
        _record(breaker, ok=False)


async def test_opens_at_the_failure_ratio_once_enough_calls() -> None:
    """Below `min_calls` nothing opens it; at the ratio with enough calls it opens."""
    changes = list[Change]()
    breaker = _breaker(changes)
    for _ in range(9):
        _record(breaker, ok=False)
    assert breaker.stats().state is CircuitState.CLOSED  # 9 calls < min_calls
    _record(breaker, ok=False)
    assert breaker.stats().state is CircuitState.OPEN
    assert changes == [("loyalty", CircuitState.CLOSED, CircuitState.OPEN)]


async def test_stays_closed_below_the_ratio() -> None:
    """Failures below the ratio never open the breaker."""
    changes = list[Change]()
    breaker = _breaker(changes)
    for n in range(100):
        _record(breaker, ok=n % 3 != 0)  # a third fail
    assert breaker.stats().state is CircuitState.CLOSED
    assert changes == []


async def test_old_failures_leave_the_window() -> None:
    """Failures older than the window no longer count toward the ratio."""
    changes = list[Change]()
    breaker = _breaker(changes)
    for _ in range(9):
        _record(breaker, ok=False)
    await asyncio.sleep(11.0)  # past the 10 s window
    _record(breaker, ok=False)
    assert breaker.stats().state is CircuitState.CLOSED
    assert breaker.stats().window_calls == 1


async def test_fails_fast_while_open() -> None:
    """While open, calls raise CircuitOpen without running, with the time to the next probe."""
    changes = list[Change]()
    breaker = _breaker(changes)
    _open(breaker)
    await asyncio.sleep(2.0)
    ran = False
    with pytest.raises(CircuitOpen) as caught, breaker.attempt():
        ran = True
    assert not ran
    assert caught.value.retry_after == pytest.approx(3.0)
    assert breaker.stats().rejected == 1


async def test_half_opens_after_the_cool_down_and_closes_on_success() -> None:
    """After the cool-down one probe goes through; its success closes the breaker."""
    changes = list[Change]()
    breaker = _breaker(changes)
    _open(breaker)
    await asyncio.sleep(5.0)
    with breaker.attempt():
        assert breaker.stats().state is CircuitState.HALF_OPEN
        with pytest.raises(CircuitOpen), breaker.attempt():
            pass  # a second caller while the probe runs is still refused
    assert breaker.stats().state is CircuitState.CLOSED
    assert [new for _, _, new in changes] == [
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.CLOSED,
    ]
    assert breaker.stats().window_calls == 0  # closed with a clean slate


async def test_a_failed_probe_reopens() -> None:
    """A probe that fails opens the breaker again for a whole cool-down."""
    changes = list[Change]()
    breaker = _breaker(changes)
    _open(breaker)
    await asyncio.sleep(5.0)
    with pytest.raises(ConnectionError), breaker.attempt():
        raise ConnectionError("still down")
    assert breaker.stats().state is CircuitState.OPEN
    await asyncio.sleep(4.9)
    with pytest.raises(CircuitOpen), breaker.attempt():
        pass
    assert breaker.stats().times_opened == 2


async def test_probes_limit_the_half_open_traffic() -> None:
    """Half-open lets exactly `probes` calls through at once."""
    changes = list[Change]()
    breaker = _breaker(changes, probes=2)
    _open(breaker)
    await asyncio.sleep(5.0)
    with breaker.attempt(), breaker.attempt(), pytest.raises(CircuitOpen), breaker.attempt():
        pass


async def test_a_cancelled_call_is_no_verdict() -> None:
    """A cancelled probe frees its slot and neither closes nor reopens the breaker."""
    changes = list[Change]()
    breaker = _breaker(changes)
    _open(breaker)
    await asyncio.sleep(5.0)
    entered = asyncio.Event()

    async def probe() -> None:
        with breaker.attempt():
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(probe())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.stats().state is CircuitState.HALF_OPEN
    _record(breaker, ok=True)  # the probe slot is free again
    assert breaker.stats().state is CircuitState.CLOSED


async def test_exceptions_count_as_failures_and_skips_as_nothing() -> None:
    """A raising block is a failure; a skipped one (never reached the downstream) is nothing."""
    changes = list[Change]()
    breaker = _breaker(changes)
    with pytest.raises(ValueError, match="x"), breaker.attempt():
        raise ValueError("x")
    with pytest.raises(KeyError):
        _skip_and_raise(breaker)
    stats = breaker.stats()
    assert (stats.window_calls, stats.window_failures) == (1, 1)


def _skip_and_raise(breaker: CircuitBreaker) -> None:
    with breaker.attempt() as attempt:
        attempt.skip()
        raise KeyError("limit")


def test_bad_arguments_are_named() -> None:
    """Nonsense thresholds are refused with a message naming the parameter."""
    with pytest.raises(ValueError, match="`failure_ratio`"):
        CircuitBreaker("x", failure_ratio=0.0)
