"""PostgreSQL stopped under a running service: 503 with Retry-After, concise logs, recovery."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import httpx

from tests.private_pg import private_postgres
from tests.processes import Served, serving

PASSWORD = "correct horse battery"


async def _hit_every_database_route(client: httpx.AsyncClient, token: str) -> list[httpx.Response]:
    auth = {"Authorization": f"Bearer {token}"}
    answers = []
    for n in range(8):
        answers += [
            await client.post("/login", json={"email": "o@example.com", "password": PASSWORD}),
            await client.post(
                "/register",
                json={"email": f"n{n}@example.com", "password": PASSWORD, "display_name": "N"},
            ),
            await client.get("/users/me/orders", headers=auth),
            await client.post(
                "/users/me/orders",
                headers=auth,
                json={"items": [{"sku": "A1", "quantity": 1, "unit_price_cents": 100}]},
            ),
            await client.get("/users/me/preferences", headers=auth),
        ]
    return answers


async def _until_recovered(client: httpx.AsyncClient, token: str) -> None:
    # A bounded poll: the pool reconnects on the next acquire once PostgreSQL is back.
    async with asyncio.timeout(60):
        while True:
            with contextlib.suppress(httpx.TransportError):
                response = await client.get(
                    "/users/me/orders", headers={"Authorization": f"Bearer {token}"}
                )
                if response.status_code == 200:
                    return
            await asyncio.sleep(0.2)


def _problems_since(served: Served, start: int) -> list[str]:
    # Access lines, and the watchdog's stall reports (a busy machine's, with their stack
    # on purpose), say nothing about how the outage is logged.
    return [
        line
        for line in served.log_lines[start:]
        if '"event": "request"' not in line and '"stalled_ms"' not in line
    ]


async def test_database_outage_is_503_with_retry_after_and_no_traceback(tmp_path: Path) -> None:
    """Stopped (fast, then immediate): every DB route answers 503 + Retry-After, logs stay short."""
    async with private_postgres() as pg:
        env = {
            "LOOPWISE_DATABASE_URL": pg.dsn,
            "LOOPWISE_MIGRATE_ON_START": "true",
            "LOOPWISE_DATA_DIR": str(tmp_path),
            "LOOPWISE_DB_ACQUIRE_TIMEOUT": "2",
        }
        async with (
            serving(env) as served,
            httpx.AsyncClient(base_url=served.base_url, timeout=30) as client,
        ):
            body = {"email": "o@example.com", "password": PASSWORD, "display_name": "O"}
            assert (await client.post("/register", json=body)).status_code == 201
            login = await client.post("/login", json={"email": body["email"], "password": PASSWORD})
            token = login.json()["access_token"]
            await _until_recovered(client, token)
            for mode in ("fast", "immediate"):
                mark = len(served.log_lines)
                await pg.stop(mode)
                answers = await _hit_every_database_route(client, token)
                for response in answers:
                    assert response.status_code == 503, (mode, response.request.url, response.text)
                    assert int(response.headers["retry-after"]) >= 1
                    assert response.headers["content-type"] == "application/problem+json"
                    assert response.json()["status"] == 503
                assert (await client.get("/readyz")).status_code == 503
                logged = _problems_since(served, mark)
                assert not any("Traceback" in line for line in logged), "".join(logged)
                assert all(len(line) < 1000 for line in logged), "".join(logged)
                outage_lines = [
                    json.loads(line) for line in logged if '"database_unavailable"' in line
                ]
                kinds = {line["kind"] for line in outage_lines}
                if mode == "fast":
                    # The first outage is logged; a second within the interval may be
                    # held back entirely (its count joins the next line's `suppressed`).
                    assert kinds, "".join(logged)
                # One line per kind per 10 s; the 40 failures took far less than 30 s.
                assert len(outage_lines) <= 3 * max(1, len(kinds)), outage_lines
                assert not any("unhandled_exception" in line for line in logged)
                await pg.start()
                await _until_recovered(client, token)
