"""The downstream simulator: its two APIs, its faults, its run-time control, its command."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from loopwise_bench.sim import SimConfig, SimState, create_sim_app
from tests.process_guard import kill_group, run_process, spawn
from tests.servers import closed_port, serve_asgi


@pytest.fixture
async def sim() -> AsyncIterator[tuple[httpx.AsyncClient, SimState]]:
    app = create_sim_app(SimConfig(latency_ms=0, seed=1))
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url) as client:
        yield client, app.state.sim


async def test_loyalty_and_shipments_answer(sim: tuple[httpx.AsyncClient, SimState]) -> None:
    """Both APIs answer with the documented shapes, the same for the same id."""
    client, _ = sim
    loyalty = (await client.get("/loyalty/42")).json()
    assert set(loyalty) == {"user_id", "points", "tier"}
    assert loyalty["user_id"] == 42
    assert loyalty == (await client.get("/loyalty/42")).json()
    shipment = (await client.get("/shipments/7")).json()
    assert set(shipment) == {"order_id", "status", "eta"}
    assert shipment["order_id"] == 7


async def test_error_rate_fails_that_share(sim: tuple[httpx.AsyncClient, SimState]) -> None:
    """With error_rate 0.5, about half the answers are 503, and the counter agrees."""
    client, state = sim
    await client.put("/_sim", json={"latency_ms": 0, "error_rate": 0.5, "seed": 3})
    statuses = [(await client.get(f"/loyalty/{n}")).status_code for n in range(1, 201)]
    failures = statuses.count(503)
    assert 70 <= failures <= 130
    assert failures == state.errors
    assert set(statuses) == {200, 503}


async def test_fail_mode_and_status(sim: tuple[httpx.AsyncClient, SimState]) -> None:
    """Fail mode answers 503 problem+json to everything; GET /_sim shows what it has seen."""
    client, _ = sim
    await client.put("/_sim", json={"mode": "fail", "latency_ms": 0})
    response = await client.get("/shipments/1")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    seen = (await client.get("/_sim")).json()
    assert seen["config"]["mode"] == "fail"
    assert seen["seen"]["requests"] == seen["seen"]["errors"] == 1


async def test_hang_mode_holds_until_the_client_leaves(
    sim: tuple[httpx.AsyncClient, SimState],
) -> None:
    """Hang mode never answers; the request ends when the client gives up."""
    client, state = sim
    await client.put("/_sim", json={"mode": "hang"})
    with pytest.raises(httpx.ReadTimeout):
        await client.get("/loyalty/1", timeout=0.1)
    assert state.requests == 1


async def test_bad_config_is_refused(sim: tuple[httpx.AsyncClient, SimState]) -> None:
    """An impossible behaviour is refused with 422 naming the field."""
    client, _ = sim
    response = await client.put("/_sim", json={"error_rate": 2})
    assert response.status_code == 422
    assert "error_rate" in response.text


async def test_the_command_serves_the_simulator() -> None:
    """`loopwise-bench downstream-sim` serves both APIs on the given port and stops on SIGTERM."""
    port = closed_port()
    command = Path(sys.executable).parent / "loopwise-bench"
    process = await spawn(
        str(command),
        "downstream-sim",
        "--port",
        str(port),
        "--latency-ms",
        "1",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "LOOPWISE_LOG_FORMAT": "json"},
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            response = await _first_answer(client, "/loyalty/5")
            assert response.json()["user_id"] == 5
            assert (await client.get("/shipments/5")).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(20):
                await process.wait()
        finally:
            kill_group(process.pid)
            await process.wait()


async def _first_answer(client: httpx.AsyncClient, path: str) -> httpx.Response:
    # A bounded poll: the server is another process and says nothing when it is ready.
    async with asyncio.timeout(20):
        while True:
            try:
                return await client.get(path)
            except httpx.ConnectError:
                await asyncio.sleep(0.05)


async def test_the_command_refuses_bad_options() -> None:
    """A bad option ends the command with status 2 and one line naming it."""
    command = Path(sys.executable).parent / "loopwise-bench"
    status, _, stderr = await run_process(
        str(command),
        "downstream-sim",
        "--error-rate",
        "1.5",
        within=60,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert status == 2
    assert "--error-rate" in stderr.decode()
