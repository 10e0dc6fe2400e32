"""Drain on SIGTERM: readiness fails first while serving goes on, then the server stops."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from loopwise.service.drain import Drain
from tests.processes import serving

RecordProperty = Callable[[str, object], None]

pytestmark = pytest.mark.blocks_loop  # starts processes


async def test_sigterm_drains_then_stops(
    database_url: str, tmp_path: Path, record_property: RecordProperty
) -> None:
    """SIGTERM: /readyz turns 503 while new connections are still served, then it exits 0."""
    env = {
        "LOOPWISE_DATABASE_URL": database_url,
        "LOOPWISE_DATA_DIR": str(tmp_path),
        "LOOPWISE_WORKERS": "2",
        # Long enough for the checks below on a saturated machine; the test never waits
        # for it to pass, only for the process to exit after it.
        "LOOPWISE_DRAIN_DELAY": "8",
        "LOOPWISE_JOBS_IN_PROCESS": "false",
    }
    fresh = httpx.Limits(max_keepalive_connections=0)  # every request on a new connection
    async with (
        serving(env) as served,
        httpx.AsyncClient(base_url=served.base_url, limits=fresh, timeout=10) as c,
    ):
        assert (await c.get("/readyz")).status_code == 200
        served.proc.send_signal(signal.SIGTERM)
        # Both workers must report draining: one poll may reach either of them.
        readies: list[int] = []
        served_while_draining = 0
        async with asyncio.timeout(60):
            while readies[-3:] != [503] * 3:
                readies.append((await c.get("/readyz")).status_code)
                assert (await c.get("/healthz")).status_code == 200
                users = await c.get("/users/1", headers={"Authorization": "Bearer x"})
                assert users.status_code == 401  # the app itself still answers
                served_while_draining += 1
        problem = (await c.get("/readyz")).json()
        assert problem["detail"].startswith("draining")
        # Still accepting after readiness failed: the listener has not closed yet.
        assert (await c.get("/healthz")).status_code == 200
        async with asyncio.timeout(60):
            await served.proc.wait()
    assert served.proc.returncode == 0
    events = [json.loads(line) for line in served.log_lines if line.startswith("{")]
    names = [e.get("event") for e in events]
    assert names.count("draining") == 2, names
    # Per worker: drain first, then its stop, then the lifespan's shutdown.
    assert names.index("draining") < names.index("drain_done_stopping") < names.index("stopping")
    record_property("rounds_served_while_draining", served_while_draining)


async def test_second_sigterm_cuts_the_drain_short() -> None:
    """A second SIGTERM during the delay stops at once; the timer never fires twice."""
    stops: list[str] = []
    drain = Drain(delay=3600, stop=lambda: stops.append("stop"))
    drain.begin()
    assert drain.draining
    assert stops == []
    drain.begin()
    assert stops == ["stop"]
    drain.begin()
    assert stops == ["stop"]


async def test_zero_delay_stops_at_once() -> None:
    """With no delay the drain is the old behaviour: stop on the first SIGTERM."""
    stops: list[str] = []
    Drain(delay=0, stop=lambda: stops.append("stop")).begin()
    assert stops == ["stop"]


def test_negative_delay_is_refused() -> None:
    """A negative delay names the parameter."""
    with pytest.raises(ValueError, match="`delay`"):
        Drain(delay=-1)
