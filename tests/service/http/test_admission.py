"""Admission control: a bound on requests in flight; the excess is answered 503 at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, Request
from starlette.types import Message, Receive, Scope, Send

from loopwise.service.app import create_app
from loopwise.service.http.admission import Admission, AdmissionControl
from loopwise.service.settings import InvalidSettings, Settings, load_settings
from tests.service.http.test_metrics import value


class Holder:
    """A test-only route that stays in flight until released, counting who is inside."""

    def __init__(self, entered_wanted: int) -> None:
        self.inside = 0
        self.peak = 0
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self._wanted = entered_wanted

    async def __call__(self, request: Request) -> dict[str, int]:
        self.inside += 1
        self.peak = max(self.peak, self.inside)
        if self.inside >= self._wanted:
            self.entered.set()
        try:
            await self.release.wait()
            # Work on a pool the lifespan closes: fails if it was closed under us.
            await request.state.blocking.run(int, "1")
        finally:
            self.inside -= 1
        return {"ok": 1}


@asynccontextmanager
async def serving(
    settings: Settings, holder: Holder, **limits: object
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, LifespanManager]]:
    app = create_app(settings.model_copy(update={"jobs_in_process": False, **limits}))
    app.add_api_route("/_hold", holder)
    # Start-up opens pools and hashes once off the loop: seconds on a saturated machine,
    # past asgi-lifespan's 5 s default.
    manager = LifespanManager(app, startup_timeout=60, shutdown_timeout=60)
    await manager.__aenter__()
    try:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield app, client, manager
    finally:
        holder.release.set()
        await manager.__aexit__(None, None, None)


async def test_limit_holds_and_the_excess_gets_503_at_once(settings: Settings) -> None:
    """With the limit taken, further requests are answered 503 problem+json while it is held."""
    holder = Holder(entered_wanted=2)
    async with serving(settings, holder, max_in_flight=2, admission_wait=0) as (_, client, _m):
        held = [asyncio.create_task(client.get("/_hold")) for _ in range(2)]
        await holder.entered.wait()
        # These finish while both held requests are still inside: nothing queued them.
        shed = await asyncio.gather(*(client.get("/_hold") for _ in range(3)))
        assert not any(task.done() for task in held)
        holder.release.set()
        answered = await asyncio.gather(*held)
    assert holder.peak == 2
    assert [r.status_code for r in answered] == [200, 200]
    for response in shed:
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == 503


async def test_probes_and_metrics_bypass_the_gate_and_sheds_are_counted(
    settings: Settings,
) -> None:
    """A saturated process still answers /healthz, /readyz and /metrics, which counts sheds."""
    holder = Holder(entered_wanted=1)
    async with serving(settings, holder, max_in_flight=1, admission_wait=0) as (_, client, _m):
        held = asyncio.create_task(client.get("/_hold"))
        await holder.entered.wait()
        shed = [await client.get("/users/me") for _ in range(4)]
        health, ready = await client.get("/healthz"), await client.get("/readyz")
        metrics = (await client.get("/metrics")).text
        holder.release.set()
        assert (await held).status_code == 200
    assert [r.status_code for r in shed] == [503] * 4
    assert (health.status_code, ready.status_code) == (200, 200)
    assert value(metrics, "loopwise_http_requests_shed_total") == 4
    assert value(metrics, "loopwise_http_requests_in_flight") == 1


async def test_a_shed_upload_never_reaches_the_app(settings: Settings) -> None:
    """A shed upload is answered 503 by the gate and never reaches the route.

    Its body is read first, before admission and within ``LOOPWISE_BODY_TIMEOUT``
    (``http/bodies.py``), so a slow body never holds an admission slot.
    """
    holder = Holder(entered_wanted=1)
    read = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        read.set()
        yield b'{"email": "a@example.com", "password": "long-enough-password", "display_name": "A"}'

    async with serving(settings, holder, max_in_flight=1, admission_wait=0) as (_, client, _m):
        held = asyncio.create_task(client.get("/_hold"))
        await holder.entered.wait()
        response = await client.post(
            "/register", content=body(), headers={"content-type": "application/json"}
        )
        holder.release.set()
        await held
    assert response.status_code == 503
    assert read.is_set()  # read before the gate, not after it
    conn = await asyncpg.connect(str(settings.database_url))
    try:
        assert await conn.fetchval("SELECT count(*) FROM users") == 0
    finally:
        await conn.close()


async def _asgi_request(app: AdmissionControl, path: str = "/x") -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        raise AssertionError("a shed request must not be read")

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "http", "path": path, "method": "GET", "headers": []}, receive, send)
    return sent


async def test_a_waiting_request_takes_the_freed_slot_and_a_full_queue_sheds() -> None:
    """One waits for the slot and gets it when freed; one past the queue is shed at once."""
    release = asyncio.Event()
    started: list[str] = []

    async def inner(scope: dict[str, object], receive: object, send: object) -> None:
        started.append(str(scope["path"]))
        await release.wait()

    gate = Admission(limit=1, queue=1, wait=3600)
    app = AdmissionControl(inner, gate=gate)  # type: ignore[arg-type]  # a plain ASGI callable
    first = asyncio.create_task(_asgi_request(app, "/first"))
    second = asyncio.create_task(_asgi_request(app, "/second"))
    await asyncio.sleep(0)  # one turn of the loop: both tasks run up to their first wait
    assert (gate.in_flight, gate.queued) == (1, 1)
    third = await _asgi_request(app, "/third")
    assert third[0]["status"] == 503
    assert started == ["/first"]
    release.set()
    await asyncio.gather(first, second)
    assert started == ["/first", "/second"]
    assert (gate.in_flight, gate.queued, gate.shed) == (0, 0, 1)


@pytest.mark.virtual_time
async def test_a_request_that_waits_too_long_is_shed() -> None:
    """Past the wait bound (exactly, on virtual time) a queued request is answered 503."""
    release = asyncio.Event()

    async def inner(scope: object, receive: object, send: object) -> None:
        await release.wait()

    gate = Admission(limit=1, queue=8, wait=0.25)
    app = AdmissionControl(inner, gate=gate)
    first = asyncio.create_task(_asgi_request(app))
    await asyncio.sleep(0)  # one turn of the loop: it is admitted and waits inside
    assert gate.in_flight == 1
    loop = asyncio.get_running_loop()
    started = loop.time()
    late = await _asgi_request(app)
    assert loop.time() - started == 0.25
    release.set()
    await first
    assert late[0]["status"] == 503
    assert (b"retry-after", b"1") in late[0]["headers"]
    assert json.loads(late[1]["body"])["status"] == 503
    assert (gate.in_flight, gate.queued, gate.shed) == (0, 0, 1)


@pytest.mark.parametrize(
    ("setting", "bad"),
    [("max_in_flight", "0"), ("admission_wait", "-1"), ("max_connections", "10")],
)
def test_bad_admission_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, setting: str, bad: str
) -> None:
    """A bad limit stops start-up with one line naming its environment variable."""
    monkeypatch.setenv(f"LOOPWISE_{setting.upper()}", bad)
    with pytest.raises(InvalidSettings, match=f"LOOPWISE_{setting.upper()}"):
        load_settings(_env_file=None)


def test_gate_refuses_a_limit_below_one() -> None:
    """The gate itself refuses a limit that would shed everything."""
    with pytest.raises(ValueError, match="`limit` must be positive"):
        Admission(limit=0)


async def test_drain_sheds_newcomers_and_waits_for_requests_in_flight() -> None:
    """Draining (the lifespan's exit) refuses new requests and returns once the last leaves."""
    release = asyncio.Event()

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        await release.wait()

    gate = Admission(limit=4, queue=8, wait=3600)
    app = AdmissionControl(inner, gate=gate)
    first = asyncio.create_task(_asgi_request(app))
    await asyncio.sleep(0)  # one turn of the loop: it is admitted and waits inside
    draining = asyncio.create_task(gate.drain(3600))
    await asyncio.sleep(0)
    late = await _asgi_request(app)
    assert late[0]["status"] == 503
    assert not draining.done()
    release.set()
    await first
    assert await draining is True
    assert gate.in_flight == 0


@pytest.mark.virtual_time
async def test_drain_gives_up_after_its_grace() -> None:
    """A request still in flight when the grace ends: drain returns False, exactly on time."""
    release = asyncio.Event()

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        await release.wait()

    gate = Admission(limit=1, queue=1, wait=3600)
    app = AdmissionControl(inner, gate=gate)
    stuck = asyncio.create_task(_asgi_request(app))
    queued = asyncio.create_task(_asgi_request(app))
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await gate.drain(5.0) is False
    assert loop.time() - started == 5.0
    assert (await queued)[0]["status"] == 503  # the waiting one was shed at once
    release.set()
    await stuck
    assert (gate.in_flight, gate.queued, gate.shed) == (0, 0, 1)
