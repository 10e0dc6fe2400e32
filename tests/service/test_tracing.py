"""Tracing end to end: spans reach a real OTLP receiver over loopback, across the job queue."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client.parser import text_string_to_metric_families

from loopwise.service.app import create_app
from loopwise.service.settings import Settings
from loopwise.service.tracing import TraceRequests, Tracing
from loopwise_bench.sim import SimConfig, create_sim_app
from tests.otlp import ReceivedSpan, Receiver, otlp_receiver, render_tree
from tests.servers import serve_asgi
from tests.service.accounts.conftest import PASSWORD, mark_verified
from tests.service.jobs.conftest import welcome_handlers, worker
from tests.service.jobs.smtp import smtp_server


@pytest.fixture(autouse=True)
async def _export_threads_end(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Every export thread a test started has ended before the next test begins.

    A closed app leaves its exporter's thread to finish on its own (``Tracing`` bounds
    the wait, not the thread); one still retrying a receiver that has gone would export
    into the next test, and its retry jitter draws on the ``random`` module that
    Hypothesis watches in other tests. Exports here give up after 2 s.
    """
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
    before = set(threading.enumerate())
    yield
    started = [
        thread
        for thread in threading.enumerate()
        if thread not in before and thread.name.startswith(("OtelBatch", "loopwise-tracing"))
    ]
    for thread in started:
        await asyncio.to_thread(thread.join, 30)
    assert not [thread.name for thread in started if thread.is_alive()]


@pytest.fixture
async def receiver(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Receiver]:
    """A receiver the SDK exports to, in batches every 20 ms (not its 5 s default)."""
    async with otlp_receiver() as running:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", running.endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "loopwise-test")
        yield running


@contextlib.asynccontextmanager
async def traced_client(settings: Settings, **updates: object) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"otel_enabled": True, **updates}))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


def test_tracing_off_adds_nothing_to_the_request_path(settings: Settings) -> None:
    """Off (the default), no tracing layer is in the stack and FastAPI's own hooks are off."""
    app = create_app(settings)
    ours: object = TraceRequests
    assert all(m.cls is not ours for m in app.user_middleware)
    assert not app._native_telemetry.enabled()
    assert any(m.cls is ours for m in create_app(_on(settings)).user_middleware)


def _on(settings: Settings) -> Settings:
    return settings.model_copy(update={"otel_enabled": True})


def named(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == name]


async def test_registration_trace_reaches_the_email_across_a_restart(
    settings: Settings, receiver: Receiver, database_url: str
) -> None:
    """The request span, and later (another worker, after a restart) job and SMTP: one trace."""
    async with traced_client(settings, jobs_in_process=False) as client:
        body = {"email": "ada@example.com", "password": PASSWORD, "display_name": "Ada"}
        registered = await client.post("/register", json=body, headers={"X-Request-ID": "reg-1"})
        assert registered.status_code == 201
    # The app has stopped; its spans were flushed on the way out. The job waits in the table.
    async with (
        smtp_server() as smtp,
        Tracing(),
        asyncpg.create_pool(database_url, min_size=1, max_size=3) as pool,
        worker(pool, welcome_handlers(smtp.port), database_url),
    ):
        await smtp.inbox.get()
        spans = await receiver.until(lambda spans: bool(named(spans, "smtp send")))

    [request] = named(spans, "POST /register")
    [job] = named(spans, "job email.welcome")
    [send] = named(spans, "smtp send")
    assert request.kind == "SERVER"
    assert request.attributes["http.route"] == "/register"
    assert request.attributes["http.response.status_code"] == 201
    assert request.attributes["loopwise.request_id"] == "reg-1"
    assert request.service == "loopwise-test"
    assert job.trace_id == send.trace_id == request.trace_id
    assert job.parent_id == request.span_id
    assert job.kind == "CONSUMER"
    assert job.attributes["loopwise.job.outcome"] == "done"
    assert send.parent_id == job.span_id
    assert send.attributes["server.port"] == smtp.port
    # The tree docs/operations/observability.md shows (`-rP` prints it).
    rendered = render_tree(spans, request.trace_id)
    assert [line.split("  ")[-1].split(" [")[0].strip() for line in rendered.splitlines()] == [
        "POST /register",
        "job email.welcome",
        "smtp send",
    ]
    sys.stdout.write(f"{rendered}\n")


async def test_overview_span_shows_the_hanging_branch_falling_back(
    settings: Settings, receiver: Receiver
) -> None:
    """A hanging downstream's branch span says timeout and fallback; traceparent went out."""
    seen: list[dict[bytes, bytes]] = []
    sim = create_sim_app(SimConfig(latency_ms=1))

    async def loyalty(scope: dict[str, object], receive: object, send: object) -> None:
        if scope["type"] == "http":
            seen.append(dict(scope["headers"]))  # type: ignore[call-overload]
        await sim(scope, receive, send)  # type: ignore[arg-type]

    async with (
        serve_asgi(loyalty) as loyalty_url,
        serve_asgi(create_sim_app(SimConfig(mode="hang"))) as hanging_url,
        traced_client(
            settings,
            loyalty_url=loyalty_url,
            shipments_url=hanging_url,
            shipments_timeout=0.2,
            overview_deadline=30.0,
        ) as client,
    ):
        await _log_in(client, settings)
        assert (await client.post("/users/me/orders", json=_ORDER)).status_code == 201
        response = await client.get("/users/me/overview")
        assert response.json()["degraded"] == ["shipments"]
        spans = await receiver.until(lambda spans: bool(named(spans, "GET /users/me/overview")))

    [request] = named(spans, "GET /users/me/overview")
    [shipments] = named(spans, "fan_out shipments")
    [points] = named(spans, "fan_out loyalty")
    assert shipments.trace_id == request.trace_id
    assert shipments.attributes["loopwise.branch.degraded"] is True
    assert shipments.attributes["loopwise.branch.reason"] == "timeout"
    assert ("fallback", {"reason": "timeout", "fallback": "[]"}) in shipments.events
    assert points.attributes["loopwise.branch.degraded"] is False
    [call] = [s for s in named(spans, "GET loyalty") if s.trace_id == request.trace_id]
    assert call.kind == "CLIENT"
    assert call.attributes["http.response.status_code"] == 200
    assert [name for name, _ in call.events] == ["attempt", "limit", "send"]
    # The downstream was asked within the same trace, by the client span.
    traceparent = seen[-1][b"traceparent"].decode()
    assert traceparent.split("-")[1:3] == [request.trace_id, call.span_id]


async def test_a_hung_collector_never_fails_a_request(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spans past the bounded queue are dropped and counted; every request is answered."""
    with _hung_collector() as endpoint:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "2")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
        # Each export waits this long for the answer that never comes, then the exporter
        # gives up and closes its connections (its thread outlives the test otherwise).
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "5")
        async with traced_client(settings) as client:
            statuses = [(await client.get("/healthz")).status_code for _ in range(12)]
            metrics = (await client.get("/metrics")).text
    assert statuses == [200] * 12
    dropped = {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "loopwise_tracing_spans_dropped_total"
    }
    # Two spans in the stuck export, two in the queue: the other eight were dropped.
    assert dropped["queue_full"] >= 8


@contextlib.contextmanager
def _hung_collector() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


_ORDER = {"items": [{"sku": "tea", "quantity": 1, "unit_price_cents": 250}]}


async def _log_in(client: httpx.AsyncClient, settings: Settings) -> None:
    body = {"email": "ada@example.com", "password": PASSWORD, "display_name": "Ada"}
    registered = await client.post("/register", json=body)
    assert registered.status_code == 201
    assert settings.database_url is not None
    await mark_verified(settings.database_url, registered.json()["id"])
    login = await client.post("/login", json={"email": body["email"], "password": PASSWORD})
    client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"


_LOG_IN_A_SPAN = """
from opentelemetry.sdk.trace import TracerProvider
from loopwise.service.logs import configure_logging, get_logger
configure_logging("json", "info")
log = get_logger("probe")
log.info("outside")
with TracerProvider().get_tracer("probe").start_as_current_span("work") as span:
    log.info("inside")
    print(format(span.get_span_context().trace_id, "032x"), flush=True)
"""


def test_log_lines_in_a_span_carry_its_ids() -> None:
    """A line logged inside a span names its trace and span; one outside names none."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", _LOG_IN_A_SPAN], capture_output=True, text=True, check=True
    )
    outside, inside = (json.loads(line) for line in done.stderr.splitlines())
    assert "trace_id" not in outside
    assert inside["trace_id"] == done.stdout.strip()
    assert len(inside["span_id"]) == 16
