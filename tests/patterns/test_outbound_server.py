"""Downstream against a real HTTP server on loopback: limits, rate, deadlines, cancellation.

What the limits promise is measured where it matters: at the server. These run on real
time, so they assert counts, ordering and lower bounds only (a busy machine makes things
late, never early); the exact timing is proven on virtual time in ``test_outbound.py`` and
``test_limits.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from loopwise.patterns import (
    DeadlineExceeded,
    Downstream,
    DownstreamTimeout,
    DownstreamUnreachable,
    KeyedLimits,
    Limits,
    LimitsStats,
    LimitTimeout,
    Retries,
    fail_after,
)
from loopwise_bench.sim import SimConfig, SimState, create_sim_app
from tests.servers import closed_port, serve_asgi


@pytest.fixture
async def sim() -> AsyncIterator[tuple[str, SimState]]:
    """The downstream simulator on a loopback port: (base URL, its state)."""
    app = create_sim_app(SimConfig(latency_ms=0))
    async with serve_asgi(app) as url:
        yield url, app.state.sim


def _in_flight_reaches(state: SimState, count: int) -> asyncio.Event:
    reached = asyncio.Event()

    def check(seen: SimState) -> None:
        if seen.in_flight >= count:
            reached.set()

    state.on_arrival = check
    return reached


async def test_concurrency_never_exceeds_the_limit(sim: tuple[str, SimState]) -> None:
    """60 concurrent calls with a limit of 5: the server never sees more than 5 at once."""
    url, state = sim
    state.config = SimConfig(latency_ms=20)
    async with (
        Downstream("sim", url, limits=Limits(concurrency=5), timeout=60.0) as api,
        asyncio.TaskGroup() as group,
    ):
        calls = [group.create_task(api.get(f"/loyalty/{n}")) for n in range(1, 61)]
    assert all(call.result().status_code == 200 for call in calls)
    assert state.requests == 60
    assert state.max_in_flight == 5


class Recorded:
    """A :class:`Limiter` that notes when the limits it wraps let each call through."""

    def __init__(self, inner: KeyedLimits) -> None:
        self.inner = inner
        self.granted: list[float] = []

    @asynccontextmanager
    async def acquire(self, key: str) -> AsyncIterator[None]:
        async with self.inner.acquire(key):
            self.granted.append(asyncio.get_running_loop().time())
            yield

    def stats(self) -> LimitsStats:
        return self.inner.stats()


async def test_rate_spaces_calls_on_real_time(sim: tuple[str, SimState]) -> None:
    """At 100 calls/s, 61 calls fired at once take at least 0.59 s to be let through.

    Measured where the limiter acts (a busy machine only makes that later), while the
    server counts every arrival. At the server itself the spacing would also carry each
    request's own latency, which a busy machine varies at will; the exact spacing is
    proven on virtual time in ``test_limits.py``.
    """
    url, state = sim
    calls, rate = 61, 100.0
    limits = Recorded(KeyedLimits("sim", concurrency=calls, rate=rate))
    async with (
        Downstream("sim", url, limits=limits, timeout=60.0) as api,  # load must not time out
        asyncio.TaskGroup() as group,
    ):
        for n in range(1, calls + 1):
            group.create_task(api.get(f"/loyalty/{n}"))
    assert state.requests == calls
    # One interval of slack: after a late timer the next token follows one interval after
    # its schedule, not after the late firing (that keeps the rate), so one gap may shrink.
    assert limits.granted[-1] - limits.granted[0] >= (calls - 2) / rate


async def test_deadline_ends_a_hanging_call(sim: tuple[str, SimState]) -> None:
    """A hanging downstream costs the caller its deadline: DeadlineExceeded, not before it."""
    url, state = sim
    state.config = SimConfig(mode="hang")
    loop = asyncio.get_running_loop()
    async with Downstream("sim", url, timeout=5.0) as api:
        started = loop.time()
        with pytest.raises(DeadlineExceeded):
            async with fail_after(0.2):
                await api.get("/loyalty/1")
        elapsed = loop.time() - started
    assert elapsed >= 0.2, elapsed


async def test_own_timeout_bounds_a_call_without_deadline(sim: tuple[str, SimState]) -> None:
    """Without a deadline, the downstream's own timeout bounds each attempt."""
    url, state = sim
    loop = asyncio.get_running_loop()
    async with Downstream("sim", url, timeout=0.2) as api:
        # Connected first, while the server answers: on a loaded machine a connect could
        # take the whole 0.2 s, and that is DownstreamUnreachable, not this test's subject.
        with contextlib.suppress(DownstreamTimeout, DownstreamUnreachable):
            await api.get("/loyalty/1")
        state.config = SimConfig(mode="hang")
        started = loop.time()
        with pytest.raises(DownstreamTimeout, match=r"no answer within 0\.2s"):
            await api.get("/loyalty/1")
        elapsed = loop.time() - started
    assert elapsed >= 0.2, elapsed


async def test_waiting_for_a_slot_is_bounded(sim: tuple[str, SimState]) -> None:
    """With the only slot taken by a hung call, the next caller gets LimitTimeout.

    Bounded by ``max_wait`` here, not by a deadline: on real time a stalled loop can run
    the limit's timer and the deadline's in one turn, and the deadline may win. The wait
    ending its margin before a deadline is proven exactly on virtual time
    (``test_outbound.py``).
    """
    url, state = sim
    state.config = SimConfig(mode="hang")
    reached = _in_flight_reaches(state, 1)
    limits = Limits(concurrency=1, max_wait=0.2)
    loop = asyncio.get_running_loop()
    async with Downstream("sim", url, limits=limits, timeout=60.0) as api:
        async with asyncio.TaskGroup() as group:
            hung = group.create_task(api.get("/loyalty/1"))
            await reached.wait()
            started = loop.time()
            with pytest.raises(LimitTimeout) as caught:
                await api.get("/loyalty/2")
            elapsed = loop.time() - started
            hung.cancel()
        assert api.stats().limits.rejected == 1
    assert elapsed >= 0.2
    assert caught.value.waited >= 0.2


async def test_cancellation_does_not_poison_the_pool(sim: tuple[str, SimState]) -> None:
    """Cancelling many in-flight and pool-waiting calls leaves the pool healthy (httpx #1461)."""
    url, state = sim
    state.config = SimConfig(mode="hang")
    reached = _in_flight_reaches(state, 10)
    async with Downstream(
        "sim",
        url,
        limits=Limits(concurrency=50),
        pool=httpx.Limits(max_connections=10),
        timeout=30.0,
        retry=Retries(attempts=1),
    ) as api:
        for _ in range(3):  # several rounds: a leak would compound until the pool is dead
            reached.clear()
            tasks = [asyncio.create_task(api.get(f"/loyalty/{n}")) for n in range(1, 51)]
            await reached.wait()  # 10 on the wire, 40 queued for a connection
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results)
        state.config = SimConfig(latency_ms=1)
        async with fail_after(60.0), asyncio.TaskGroup() as group:  # a guard, not a measure
            after = [group.create_task(api.get(f"/loyalty/{n}")) for n in range(1, 31)]
        assert [call.result().status_code for call in after] == [200] * 30
        assert api.stats().limits.keys[url.removeprefix("http://")].in_use == 0


async def test_refused_connection_is_retried_then_reported() -> None:
    """A port with nothing listening: connect errors are retried, then DownstreamUnreachable."""
    url = f"http://127.0.0.1:{closed_port()}"
    async with Downstream("gone", url, retry=Retries(attempts=3, wait_initial=0.01)) as api:
        with pytest.raises(DownstreamUnreachable, match="ConnectError"):
            await api.get("/loyalty/1")
        assert api.stats().retry_budget.retries == 2
