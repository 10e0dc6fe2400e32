"""Slow request bodies: read before admission, bounded in time, never starving ready requests."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.processes import serving

_SLOW_HEAD = (
    b"POST /register HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b"Content-Length: 500\r\n\r\n"
)
_SLOW_START = b'{"email": "slow@e'  # 17 of the 500 bytes promised, then nothing


async def test_body_timeout_answers_408_and_frees_the_slot(client: httpx.AsyncClient) -> None:
    """A body that stops arriving gets 408 after LOOPWISE_BODY_TIMEOUT; requests go on."""
    # In-process: the ASGI transport hands the whole body at once, so a stalled body is a
    # stream that never ends.
    stalled = asyncio.Event()

    async def trickle() -> AsyncIterator[bytes]:
        yield _SLOW_START
        await stalled.wait()  # never set: the body never completes

    response = await asyncio.wait_for(
        client.post("/register", content=trickle(), headers={"content-length": "500"}), 30
    )
    assert response.status_code == 408
    assert response.headers["connection"] == "close"
    assert response.headers["content-type"] == "application/problem+json"
    assert (await client.get("/healthz")).status_code == 200


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]


async def _well_behaved(base_url: str, token: str, count: int) -> tuple[int, list[float]]:
    """``count`` authenticated GETs over 4 keep-alive connections; (2xx count, latencies)."""
    ok = 0
    latencies: list[float] = []
    auth = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=4)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def lane(n: int) -> None:
            nonlocal ok
            for _ in range(n):
                started = time.perf_counter()
                with contextlib.suppress(httpx.TransportError):
                    response = await client.get("/users/me", headers=auth)
                    ok += 200 <= response.status_code < 300
                latencies.append(time.perf_counter() - started)

        async with asyncio.TaskGroup() as tg:
            for _ in range(4):
                tg.create_task(lane(count // 4))
    return ok, latencies


async def test_a_thousand_slow_bodies_do_not_starve_a_well_behaved_client(
    database_url: str, tmp_path: Path
) -> None:
    """1,000 slow-body connections from one address: another client still gets ≥ 99% 2xx."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard or hard == resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    env = {
        "LOOPWISE_DATABASE_URL": database_url,
        "LOOPWISE_DATA_DIR": str(tmp_path),
        "LOOPWISE_BODY_TIMEOUT": "2",
        "LOOPWISE_LOG_LEVEL": "warning",  # 1,000s of 408s need no access-log lines here
    }
    async with serving(env) as served:
        async with httpx.AsyncClient(base_url=served.base_url, timeout=30) as setup:
            body = {"email": "good@example.com", "password": "correct horse battery"}
            registered = await setup.post("/register", json={**body, "display_name": "G"})
            assert registered.status_code == 201
            token = (await setup.post("/login", json=body)).json()["access_token"]
        quiet_ok, quiet = await _well_behaved(served.base_url, token, 400)

        url = urlsplit(served.base_url)
        stop = asyncio.Event()
        opened = 0
        answered: dict[bytes, int] = {}
        attackers_ready = asyncio.Event()

        async def slow_body() -> None:
            # Hold a connection with a stalled body; when the server ends it, start again.
            nonlocal opened
            while not stop.is_set():
                try:
                    reader, writer = await asyncio.open_connection(url.hostname, url.port)
                except OSError:
                    await asyncio.sleep(0.1)
                    continue
                opened += 1
                if opened >= 1000:
                    attackers_ready.set()
                try:
                    writer.write(_SLOW_HEAD + _SLOW_START)
                    await writer.drain()
                    status_line = await reader.readline()
                    status = status_line.split(b" ")[1] if status_line else b"closed"
                    answered[status] = answered.get(status, 0) + 1
                except OSError:
                    answered[b"reset"] = answered.get(b"reset", 0) + 1
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()

        async with asyncio.TaskGroup() as attack:
            for _ in range(1000):
                attack.create_task(slow_body())
            async with asyncio.timeout(60):
                await attackers_ready.wait()
            try:
                attacked_ok, attacked = await _well_behaved(served.base_url, token, 1000)
            finally:
                stop.set()
                # Attackers still waiting for their 408 get it within the body timeout.

    success = attacked_ok / len(attacked)
    sys.stderr.write(
        f"\nwell-behaved client: quiet {quiet_ok}/{len(quiet)} 2xx,"
        f" p99 {_p99(quiet) * 1000:.1f} ms;"
        f" under 1,000 slow bodies {attacked_ok}/{len(attacked)} 2xx ({success:.2%}),"
        f" p99 {_p99(attacked) * 1000:.1f} ms; attackers answered {answered}\n"
    )
    assert quiet_ok == len(quiet)
    assert success >= 0.99
    # The server ended the stalled bodies itself, with 408, while they were held.
    assert answered.get(b"408", 0) >= 1000
