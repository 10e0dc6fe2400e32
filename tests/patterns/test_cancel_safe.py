"""Cancellation cannot poison the HTTP pool (httpx #1461, httpcore #1093), on a real server."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from loopwise.patterns import CancelSafeTransport
from loopwise_bench.sim import SimConfig, SimState, create_sim_app
from tests.servers import serve_asgi


@pytest.fixture
async def sim() -> AsyncIterator[tuple[str, SimState]]:
    """The downstream simulator on a loopback port: (base URL, its state)."""
    app = create_sim_app(SimConfig(latency_ms=1))
    async with serve_asgi(app) as url:
        yield url, app.state.sim


def _client(url: str, max_connections: int) -> tuple[httpx.AsyncClient, CancelSafeTransport]:
    transport = CancelSafeTransport(limits=httpx.Limits(max_connections=max_connections))
    # A pool timeout turns a poisoned pool into an error instead of a hung test.
    client = httpx.AsyncClient(base_url=url, transport=transport, timeout=5.0)
    return client, transport


def _busy(transport: CancelSafeTransport) -> list[str]:
    """Connections that are neither idle nor closed: with no call running, leaked ones."""
    return [repr(c) for c in transport.connections if not (c.is_idle() or c.is_closed())]


async def _cut_short(client: httpx.AsyncClient, n: int, after: float) -> None:
    try:
        async with asyncio.timeout(after):
            await client.get(f"/loyalty/{n}")
    except TimeoutError:
        pass


async def test_calls_cancelled_under_contention_leave_the_pool_whole(
    sim: tuple[str, SimState],
) -> None:
    """Hundreds of calls cancelled at every stage (queued, connecting, in flight) leak no slot."""
    url, _ = sim
    draw = random.Random(1093)  # seeded: the same cancellation times every run
    client, transport = _client(url, max_connections=3)
    async with client:
        for _ in range(40):
            async with asyncio.TaskGroup() as group:
                for n in range(1, 16):
                    group.create_task(_cut_short(client, n, draw.uniform(0.0, 0.004)))
        assert _busy(transport) == []
        async with asyncio.TaskGroup() as group:
            after = [group.create_task(client.get(f"/loyalty/{n}")) for n in range(1, 11)]
    assert [call.result().status_code for call in after] == [200] * 10


async def test_a_call_cancelled_again_during_its_clean_up_gives_back_its_slot(
    sim: tuple[str, SimState],
) -> None:
    """Cancelled again while it cleans up (nested deadlines do that), a call frees its slot."""
    url, state = sim
    state.config = SimConfig(mode="hang")
    arrived = asyncio.Event()
    state.on_arrival = lambda _: arrived.set()
    client, transport = _client(url, max_connections=1)
    async with client:
        call = asyncio.create_task(client.get("/loyalty/1"))
        await arrived.wait()
        call.cancel()
        await asyncio.sleep(0)  # one step into its clean-up, not a wait for anything
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        state.config = SimConfig(latency_ms=1)
        response = await client.get("/loyalty/2")
        assert _busy(transport) == []
    assert response.status_code == 200


async def test_requests_queued_together_get_one_idle_connection_each(
    sim: tuple[str, SimState],
) -> None:
    """Ten requests arriving together on ten idle connections each get their own, first time."""
    url, _ = sim
    client, transport = _client(url, max_connections=10)
    async with client:
        async with asyncio.TaskGroup() as group:  # opens the ten connections
            for n in range(1, 11):
                group.create_task(client.get(f"/loyalty/{n}"))
        pool: Any = transport._pool  # the private pass the deviation overrides
        passes = 0
        assign = pool._assign_requests_to_connections

        def counted() -> list[Any]:
            nonlocal passes
            passes += 1
            closing: list[Any] = assign()
            return closing

        pool._assign_requests_to_connections = counted
        async with asyncio.TaskGroup() as group:
            calls = [group.create_task(client.get(f"/loyalty/{n}")) for n in range(1, 11)]
        opened = len(transport.connections)
    assert [call.result().status_code for call in calls] == [200] * 10
    # One pass when each request comes, one when it goes: none turned away and sent round
    # again because an earlier request in the same pass was handed the same connection.
    assert (passes, opened) == (20, 10)
