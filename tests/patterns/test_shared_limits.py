"""RedisStore, RedisLimits and SharedBreaker against a private Redis, in one process.

Each "process" is a store of its own (its own connections and holder ids), so two stores
in one test share exactly as two processes do. Redis's clock is real, so these run on real
time and assert counts, order and lower bounds; the few upper bounds are generous and say
so. A hung Redis is a paused one (SIGSTOP); an unreachable one is killed.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import redis.asyncio

from loopwise.patterns import (
    CircuitOpen,
    CircuitState,
    Limits,
    LimitTimeout,
    RedisLimits,
    RedisStore,
    SharedBreaker,
    fail_after,
)
from tests.cluster.engines import PrivateRedis


@pytest.fixture
async def stores(redis_server: PrivateRedis) -> AsyncIterator[Callable[..., RedisStore]]:
    """Opened stores on the private Redis, one per simulated process, closed at the end."""
    async with AsyncExitStack() as stack:

        def make() -> RedisStore:
            store = RedisStore.from_url(redis_server.url, timeout=1.0)  # sharing, not fallback
            stack.push_async_callback(store.aclose)
            return store

        yield make


async def _stopped(pid: int) -> None:
    """Return once the process is stopped: SIGSTOP takes effect when the kernel gets to it."""
    stat = Path(f"/proc/{pid}/stat")
    async with asyncio.timeout(10):
        # A bounded poll: the kernel gives no event when a process has stopped.
        while (await asyncio.to_thread(stat.read_text)).split(") ", 1)[1][0] != "T":  # noqa: ASYNC110 -- see above
            await asyncio.sleep(0.01)


async def _opened(store: RedisStore) -> RedisStore:
    await store.open()
    return store


async def test_two_processes_share_one_concurrency_limit(
    stores: Callable[..., RedisStore],
) -> None:
    """Two stores, limit 3: at most 3 hold at once across both, and all get through."""
    a, b = await _opened(stores()), await _opened(stores())
    limits = [RedisLimits(s, "shared", Limits(concurrency=3)) for s in (a, b)]
    active = peak = 0

    async def call(limit: RedisLimits) -> None:
        nonlocal active, peak
        async with limit.acquire("host:80"):
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.02)
            active -= 1

    await asyncio.gather(*(call(limits[n % 2]) for n in range(24)))
    assert peak == 3
    assert sum(lim.stats().admitted for lim in limits) == 24
    assert limits[0].stats().shared_in_use is not None


async def test_a_full_limit_refuses_within_the_deadline(stores: Callable[..., RedisStore]) -> None:
    """Every slot held elsewhere: the caller waits in line, then fails fast at its deadline."""
    a, b = await _opened(stores()), await _opened(stores())
    holder, waiter = (RedisLimits(s, "full", Limits(concurrency=1)) for s in (a, b))
    async with holder.acquire("k"):
        with pytest.raises(LimitTimeout) as caught:
            async with fail_after(0.3), waiter.acquire("k"):
                pytest.fail("admitted past a full limit")
    assert caught.value.limit == "concurrency"
    assert waiter.stats().rejected == 1


async def test_a_dead_holders_slot_frees_after_the_lease(
    stores: Callable[..., RedisStore], redis_server: PrivateRedis
) -> None:
    """A holder that never gives its slot back (its process died) loses it after the lease."""
    a, b = await _opened(stores()), await _opened(stores())
    dead = RedisLimits(a, "lease", Limits(concurrency=1), lease=0.5)
    alive = RedisLimits(b, "lease", Limits(concurrency=1), lease=0.5)
    entered = dead.acquire("k")
    await entered.__aenter__()  # taken, never released: as if SIGKILLed
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with fail_after(5), alive.acquire("k"):
        waited = loop.time() - start
    assert waited >= 0.3  # held until (about) the lease ran out, not freed early
    raw = redis.asyncio.Redis.from_url(redis_server.url, driver_info=None)
    try:
        assert await raw.zcard("loopwise:limits:{lease:k}:slots") == 0  # alive gave its back
    finally:
        await raw.aclose()


async def test_rate_reservations_space_calls_across_processes(
    stores: Callable[..., RedisStore],
) -> None:
    """20/s shared by two stores: 10 calls at once start one interval apart, in order."""
    a, b = await _opened(stores()), await _opened(stores())
    limits = [RedisLimits(s, "rate", Limits(concurrency=None, rate=20.0)) for s in (a, b)]
    loop = asyncio.get_running_loop()
    starts: list[float] = []

    async def call(limit: RedisLimits) -> None:
        async with limit.acquire("k"):
            starts.append(loop.time())

    await asyncio.gather(*(call(limits[n % 2]) for n in range(10)))
    # Ten tokens at 20/s: the last starts at least 9 intervals (0.45 s) after the first.
    # Ten tokens at 20/s, due 9 intervals (0.45 s) apart at Redis; each starts here when its
    # reply arrives plus its wait, so the replies' own latencies (a few ms each) add jitter.
    assert max(starts) - min(starts) >= 0.45 - 0.05


async def test_a_rate_wait_past_the_deadline_is_refused_at_once(
    stores: Callable[..., RedisStore],
) -> None:
    """GCRA knows the wait: a token due after the deadline is refused without waiting."""
    limit = RedisLimits(await _opened(stores()), "far", Limits(concurrency=None, rate=1.0))
    async with limit.acquire("k"):
        pass
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(LimitTimeout) as caught:
        async with fail_after(0.5), limit.acquire("k"):
            pytest.fail("admitted a token due after the deadline")
    assert caught.value.limit == "rate"
    assert loop.time() - start < 0.4  # refused before the deadline, not at it


async def test_unreachable_redis_falls_back_to_the_process_share(
    redis_server: PrivateRedis,
) -> None:
    """Redis gone: calls pass on limit // instances, reported once; then sharing resumes."""
    modes: list[bool] = []
    store = RedisStore.from_url(
        redis_server.url,
        timeout=1.0,
        instances=3,
        recheck_after=0.2,
        on_mode_change=lambda shared, _: modes.append(shared),
    )
    async with store:
        limit = RedisLimits(store, "away", Limits(concurrency=7))
        await redis_server.stop(signal.SIGKILL)
        active = peak = 0

        async def call() -> None:
            nonlocal active, peak
            async with limit.acquire("k"):
                active += 1
                peak = max(peak, active)
                await asyncio.sleep(0.01)
                active -= 1

        await asyncio.gather(*(call() for _ in range(12)))
        assert peak == 2  # 7 // 3: the share in fallback
        assert modes == [False]
        stats = limit.stats()
        assert (stats.fallback, stats.fallback_calls) == (True, 12)
        await redis_server.start()
        await asyncio.sleep(0.3)  # past recheck_after: the next call probes
        async with limit.acquire("k"):
            pass
        assert modes == [False, True]
        assert limit.stats().fallback is False
        assert store.stats().shared


async def test_a_hung_redis_costs_one_call_the_timeout_and_the_next_nothing(
    redis_server: PrivateRedis,
) -> None:
    """Redis paused (SIGSTOP): the first call waits out the timeout; the next ones do not."""
    async with RedisStore.from_url(redis_server.url, timeout=0.2) as store:
        limit = RedisLimits(store, "hung", Limits(concurrency=2))
        assert redis_server.proc is not None
        redis_server.proc.send_signal(signal.SIGSTOP)
        await _stopped(redis_server.proc.pid)
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()
            async with limit.acquire("k"):
                first = loop.time() - start
            middle = loop.time()
            async with limit.acquire("k"):
                second = loop.time() - middle
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)
    assert first >= 0.2  # waited for the reply until the timeout, then fell back
    assert first < 2.0  # and no longer (generous: the bound is 0.2 s, the machine is busy)
    assert second < 0.2  # in fallback: Redis is not asked again until recheck_after
    assert store.stats().errors == 1  # only the first call asked Redis


async def test_breakers_share_open_probe_and_close(stores: Callable[..., RedisStore]) -> None:
    """One process's breaker opens: the other opens too; one probe; both close."""
    a, b = await _opened(stores()), await _opened(stores())
    options = {"min_calls": 2, "cool_down": 0.3, "sync_every": 0.01}
    first, second = (SharedBreaker(s, "ds", **options) for s in (a, b))
    for _ in range(2):
        with pytest.raises(RuntimeError):
            async with first.admit():
                raise RuntimeError("downstream failed")
    assert first.state is CircuitState.OPEN
    await asyncio.sleep(0.02)  # past sync_every: the next call reads the shared state
    with pytest.raises(CircuitOpen):
        async with second.admit():
            pytest.fail("admitted while open elsewhere")
    assert second.state is CircuitState.OPEN
    await asyncio.sleep(0.35)  # the cool-down: one probe may go, from either process
    probe_done = asyncio.Event()

    async def probe() -> None:
        async with second.admit():
            await probe_done.wait()

    task = asyncio.create_task(probe())
    await asyncio.sleep(0.02)
    with pytest.raises(CircuitOpen):  # the probe is taken: this one fails fast
        async with first.admit():
            pytest.fail("a second probe")
    probe_done.set()
    await task
    assert second.stats().state is CircuitState.CLOSED
    await asyncio.sleep(0.02)
    async with first.admit():
        pass
    assert first.stats().state is CircuitState.CLOSED
