"""Keyed concurrency and rate limits: admission order, bounded waiting, stats, forgetting.

On virtual time: the loop's clock jumps to the next timer whenever every task waits, so
waits and GCRA spacing are asserted exactly, and no test really sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from loopwise.patterns import (
    KeyedLimits,
    KeyStats,
    Limits,
    LimitTimeout,
    Saturated,
    fail_after,
)

pytestmark = pytest.mark.virtual_time


async def _hold(limits: KeyedLimits, key: str, held: asyncio.Event, release: asyncio.Event) -> None:
    async with limits.acquire(key):
        held.set()
        await release.wait()


async def _acquire_once(limits: KeyedLimits, key: str, *, within: float | None = None) -> None:
    """Take a slot and give it back at once, under a deadline of ``within`` if given."""
    if within is None:
        async with limits.acquire(key):
            return
    async with fail_after(within), limits.acquire(key):
        return


async def _queued(
    limits: KeyedLimits, key: str, queued: asyncio.Event, body: list[int], n: int
) -> None:
    # Nothing in `acquire` yields before the caller is in the queue, so once `queued` is
    # seen by the test, this caller is certainly waiting in line.
    queued.set()
    async with limits.acquire(key):
        body.append(n)


async def test_waiters_are_admitted_first_come_first_served() -> None:
    """A released slot goes to the oldest waiter; a newcomer cannot barge ahead."""
    limits = KeyedLimits(concurrency=1)
    held, release = asyncio.Event(), asyncio.Event()
    order: list[int] = []
    async with asyncio.TaskGroup() as group:
        group.create_task(_hold(limits, "h", held, release))
        await held.wait()
        for n in range(5):
            queued = asyncio.Event()
            group.create_task(_queued(limits, "h", queued, order, n))
            await queued.wait()
        assert limits.stats().keys["h"].waiting == 5
        release.set()
    assert order == [0, 1, 2, 3, 4]
    assert limits.stats().keys["h"].in_use == 0


async def test_keys_are_limited_separately() -> None:
    """A full key does not hold up another key."""
    limits = KeyedLimits(concurrency=1, max_wait=0)
    held, release = asyncio.Event(), asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(_hold(limits, "busy", held, release))
        await held.wait()
        await _acquire_once(limits, "free")
        with pytest.raises(LimitTimeout):
            await _acquire_once(limits, "busy")
        release.set()


async def test_waiting_is_bounded_by_the_deadline() -> None:
    """A caller waits until `margin` before its deadline, then fails fast as Saturated."""
    limits = KeyedLimits("api", concurrency=1, margin=0.01)
    held, release = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as group:
        group.create_task(_hold(limits, "h", held, release))
        await held.wait()
        started = loop.time()
        with pytest.raises(LimitTimeout) as caught:
            await _acquire_once(limits, "h", within=0.2)
        elapsed = loop.time() - started
        release.set()
    assert isinstance(caught.value, Saturated)
    assert (caught.value.key, caught.value.limit, caught.value.resource) == (
        "h",
        "concurrency",
        "api",
    )
    assert elapsed == pytest.approx(0.2 - 0.01, abs=1e-9)
    assert caught.value.waited == pytest.approx(0.2 - 0.01, abs=1e-9)
    stats = limits.stats()
    assert (stats.keys["h"].rejected, stats.keys["h"].waiting, stats.rejected) == (1, 0, 1)


async def test_max_wait_bounds_waiting_without_a_deadline() -> None:
    """`max_wait` caps the wait even when no deadline is in force."""
    limits = KeyedLimits(concurrency=1, max_wait=0.05)
    held, release = asyncio.Event(), asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(_hold(limits, "h", held, release))
        await held.wait()
        with pytest.raises(LimitTimeout) as caught:
            await _acquire_once(limits, "h")
        release.set()
    assert caught.value.waited == pytest.approx(0.05, abs=1e-9)


async def test_no_time_left_refuses_without_waiting() -> None:
    """With less time left than the margin, a full key refuses at once."""
    limits = KeyedLimits(concurrency=1, margin=0.05)
    held, release = asyncio.Event(), asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(_hold(limits, "h", held, release))
        await held.wait()
        with pytest.raises(LimitTimeout) as caught:
            await _acquire_once(limits, "h", within=0.04)
        release.set()
    assert caught.value.waited == 0.0


async def test_rate_refuses_upfront_when_the_token_comes_too_late() -> None:
    """GCRA knows the wait: a token due after the deadline is refused now, not after waiting."""
    limits = KeyedLimits(concurrency=None, rate=1.0)
    await _acquire_once(limits, "h")
    with pytest.raises(LimitTimeout) as caught:
        await _acquire_once(limits, "h", within=0.5)
    assert caught.value.limit == "rate"
    assert caught.value.waited == 0.0


async def test_burst_admits_back_to_back_then_spaces() -> None:
    """`burst` calls start at once; the next one must wait for a token."""
    limits = KeyedLimits(concurrency=None, rate=1.0, burst=3, max_wait=0.1)
    for _ in range(3):
        await _acquire_once(limits, "h")
    with pytest.raises(LimitTimeout):
        await _acquire_once(limits, "h")
    assert limits.stats().keys["h"].admitted == 3


async def test_rate_waiters_go_in_order_one_interval_apart() -> None:
    """Callers waiting for tokens are admitted first come first served, spaced by the rate."""
    limits = KeyedLimits(concurrency=None, rate=50.0)
    loop = asyncio.get_running_loop()
    admitted: list[tuple[int, float]] = []

    async def call(n: int) -> None:
        async with limits.acquire("h"):
            admitted.append((n, loop.time()))

    async with asyncio.TaskGroup() as group:
        for n in range(6):
            group.create_task(call(n))
    assert [n for n, _ in admitted] == list(range(6))
    first = admitted[0][1]
    gaps = [at - first for _, at in admitted]
    assert gaps == pytest.approx([0.0, 0.02, 0.04, 0.06, 0.08, 0.10], abs=1e-9)


async def test_rate_holds_after_the_loop_stalls() -> None:
    """After a stall, late callers go one interval apart: no catch-up burst beyond one token."""
    limits = KeyedLimits(concurrency=None, rate=10.0)
    loop = asyncio.get_running_loop()
    await _acquire_once(limits, "h")
    await asyncio.sleep(5.0)  # idle long past many intervals: the bucket is full again
    admitted: list[float] = []

    async def call() -> None:
        async with limits.acquire("h"):
            admitted.append(loop.time())

    async with asyncio.TaskGroup() as group:
        for _ in range(4):
            group.create_task(call())
    gaps = [later - earlier for earlier, later in itertools.pairwise(admitted)]
    assert gaps == pytest.approx([0.1, 0.1, 0.1], abs=1e-9)


async def test_limits_value_builds_the_same_limiter() -> None:
    """`KeyedLimits.of(name, Limits(...))` carries every bound of the value."""
    limits = KeyedLimits.of("api", Limits(concurrency=3, rate=5.0, burst=2, max_wait=1.0))
    assert (limits.name, limits.concurrency, limits.rate, limits.burst, limits.max_wait) == (
        "api",
        3,
        5.0,
        2,
        1.0,
    )


async def test_cancelled_rate_waiter_does_not_hold_up_the_next() -> None:
    """A caller cancelled while waiting for a token leaves the queue to the next one."""
    limits = KeyedLimits(concurrency=None, rate=20.0)
    await _acquire_once(limits, "h")
    queued = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        first = group.create_task(_queued(limits, "h", queued, [], 0))
        await queued.wait()
        order: list[int] = []
        queued_second = asyncio.Event()
        second = group.create_task(_queued(limits, "h", queued_second, order, 1))
        await queued_second.wait()
        assert limits.stats().keys["h"].waiting == 2
        first.cancel()
    assert second.done()
    assert order == [1]
    assert limits.stats().keys["h"].waiting == 0


async def test_cancelled_waiter_leaves_no_trace() -> None:
    """Cancelling a waiting caller frees its place in the queue and takes no slot."""
    limits = KeyedLimits(concurrency=1)
    held, release = asyncio.Event(), asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(_hold(limits, "h", held, release))
        await held.wait()
        queued = asyncio.Event()
        waiter = group.create_task(_queued(limits, "h", queued, [], 0))
        await queued.wait()
        assert limits.stats().keys["h"].waiting == 1
        waiter.cancel()
        await asyncio.wait([waiter])
        assert limits.stats().keys["h"].waiting == 0
        release.set()
    async with limits.acquire("h"):
        assert limits.stats().keys["h"].in_use == 1
    assert limits.stats().keys["h"].in_use == 0


async def test_waiter_gone_as_the_slot_frees_leaves_no_trace() -> None:
    """A waiter cancelled in the instant the slot frees ends cancelled, not in an error."""
    limits = KeyedLimits(concurrency=1)
    queued = asyncio.Event()
    async with limits.acquire("h"):
        waiter = asyncio.create_task(_queued(limits, "h", queued, [], 0))
        await queued.wait()
        waiter.cancel()  # its place in the queue is done before it runs again...
    # ...and the release just now passed it over, so the queue no longer holds it.
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limits.stats().keys["h"] == KeyStats(in_use=0, waiting=0, admitted=1, rejected=0)


async def test_stats_show_saturation() -> None:
    """The snapshot counts slots in use, callers waiting, admitted and rejected."""
    limits = KeyedLimits("s", concurrency=2, rate=100.0)
    held, release = asyncio.Event(), asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(_hold(limits, "h", held, release))
        await held.wait()
        snapshot = limits.stats()
        release.set()
    assert snapshot.keys["h"].in_use == 1
    assert (snapshot.name, snapshot.concurrency, snapshot.rate, snapshot.admitted) == (
        "s",
        2,
        100.0,
        1,
    )


async def test_idle_keys_are_forgotten() -> None:
    """State for keys nobody uses any more is dropped, so many keys cannot leak memory."""
    limits = KeyedLimits(concurrency=2, forget_idle_after=1.0)
    for n in range(200):
        await _acquire_once(limits, f"host-{n}")
        await asyncio.sleep(1.0)  # virtual: each key has been idle long enough by the next
    stats = limits.stats()
    assert set(stats.keys) == {"host-199"}
    assert stats.admitted == 200


async def test_keys_idle_for_less_are_kept() -> None:
    """A key idle for less than `forget_idle_after` keeps its state (and counters)."""
    limits = KeyedLimits(concurrency=2, forget_idle_after=1.0)
    await _acquire_once(limits, "a")
    await asyncio.sleep(0.999)
    await _acquire_once(limits, "b")
    assert set(limits.stats().keys) == {"a", "b"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"concurrency": 0}, "`concurrency` must be at least 1"),
        ({"rate": 0.0}, "`rate` must be positive"),
        ({"burst": 0}, "`burst` must be at least 1"),
        ({"max_wait": -1.0}, "`max_wait` must not be negative"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], message: str) -> None:
    """A bad argument is refused with a message naming it and its rule."""
    with pytest.raises(ValueError, match=message):
        KeyedLimits(**kwargs)
