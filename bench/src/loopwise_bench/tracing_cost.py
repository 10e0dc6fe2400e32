"""What tracing costs the event loop: CPU per request, off and on, in one run.

    WITH="--with opentelemetry-instrumentation-asgi --with opentelemetry-instrumentation-asyncpg"
    uv run $WITH python -m loopwise_bench.tracing_cost app postgresql://postgres@127.0.0.1/db
    uv run $WITH python -m loopwise_bench.tracing_cost layers
    uv run $WITH python -m loopwise_bench.tracing_cost queries postgresql://postgres@127.0.0.1/db

``layers``: the request-span layer alone around a no-op ASGI app, ours against FastAPI's
native spans and opentelemetry-instrumentation-asgi, 7 alternating rounds of 3,000 calls.
``queries``: one ``SELECT 1`` per request span, with no span of its own, our own span, or
the asyncpg instrumentation. ``app``: the whole app, below.

Drives the app in process (no server, no socket), so the figure is the loop thread's own
CPU (``time.thread_time``) per request: what a worker spends, whatever the machine's load
does to wall-clock time. The exporter's thread, the downstream simulator (in a thread of
its own) and PostgreSQL are not counted. Variants alternate round by round, so a change in
the machine's load reaches all of them alike; the report gives each variant's median round.

Variants: tracing off; our request span (``service/tracing.py``) at 10% and 100%
sampling; FastAPI's native telemetry instead of it; opentelemetry-instrumentation-asgi
instead of it, and the asyncpg instrumentation on top of ours (when installed, e.g. with
``uv run --with``). Spans go to an OTLP/HTTP sink in a thread of this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import logging
import os
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import asyncpg
import httpx
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loopwise.service.app import create_app
from loopwise.service.logs import configure_logging
from loopwise.service.migrate import migrate
from loopwise.service.settings import load_settings
from loopwise.service.tracing import TraceRequests, Tracing
from loopwise_bench.sim import SimConfig, create_sim_app

__all__ = ["main"]

ROUNDS = 3
# Per round: enough for a stable thread_time; the overview waits on its downstreams.
REQUESTS = {"GET /users/{id}": 400, "GET /users/me/overview": 100}
_PASSWORD = "correct horse battery"  # noqa: S105 - a benchmark account, not a secret


def _ours(app: FastAPI) -> Any:
    return app


def _without_ours(app: FastAPI) -> FastAPI:
    ours: object = TraceRequests
    app.user_middleware = [m for m in app.user_middleware if m.cls is not ours]
    return app


def _fastapi_native(app: FastAPI) -> Any:
    # FastAPI keeps its telemetry switches private; set as FastAPI(telemetry=...) would.
    from fastapi.telemetry._asgi import NativeTelemetry

    app = _without_ours(app)
    app._telemetry["tracing"] = True
    app._telemetry["operation_spans"] = False
    app._native_telemetry = NativeTelemetry(app._telemetry)
    return app


def _contrib_asgi(app: FastAPI) -> Any:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(_without_ours(app))


@contextlib.contextmanager
def _asyncpg_instrumented() -> Iterator[None]:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    instrumentor = AsyncPGInstrumentor()
    instrumentor.instrument()
    try:
        yield
    finally:
        instrumentor.uninstrument()


# name -> (tracing on, sampler ratio, how the app is wrapped, with asyncpg instrumentation)
Variant = tuple[bool, float, Callable[[FastAPI], Any], bool]
VARIANTS: dict[str, Variant] = {
    "off": (False, 0.0, _ours, False),
    "ours 10%": (True, 0.1, _ours, False),
    "ours 100%": (True, 1.0, _ours, False),
    "fastapi native 100%": (True, 1.0, _fastapi_native, False),
}
_OPTIONAL: dict[str, tuple[str, Variant]] = {
    "contrib asgi 100%": ("opentelemetry.instrumentation.asgi", (True, 1.0, _contrib_asgi, False)),
    "ours 100% + asyncpg": ("opentelemetry.instrumentation.asyncpg", (True, 1.0, _ours, True)),
}


class _Sink(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that accepts every export: the spans really leave the process."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


def _in_thread(serve: Callable[[], object]) -> None:
    threading.Thread(target=serve, daemon=True).start()


def _sim_url() -> str:
    """The downstream simulator on its own loop, in its own thread (its CPU is not ours)."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    config = uvicorn.Config(
        create_sim_app(SimConfig(latency_ms=1)), log_config=None, access_log=False
    )
    _in_thread(lambda: asyncio.run(uvicorn.Server(config).serve(sockets=[sock])))
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextlib.asynccontextmanager
async def _client(dsn: str, sim: str, variant: Variant) -> AsyncIterator[httpx.AsyncClient]:
    enabled, ratio, wrap, instrument_asyncpg = variant
    _sampler(ratio)
    settings = load_settings(
        database_url=dsn,
        otel_enabled=enabled,
        loyalty_url=sim,
        shipments_url=sim,
        jobs_in_process=False,
        watchdog_enabled=False,
        argon2_time_cost=1,
        argon2_memory_kib=64,
        argon2_parallelism=1,
        _env_file=None,
    )
    with _asyncpg_instrumented() if instrument_asyncpg else contextlib.nullcontext():
        # Wrapped before the lifespan: Starlette builds the middleware stack on first call.
        app = wrap(create_app(settings))
        async with LifespanManager(app, startup_timeout=120, shutdown_timeout=120) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
                yield client


async def _account(dsn: str, client: httpx.AsyncClient) -> tuple[int, str]:
    body = {"email": "trace@example.com", "password": _PASSWORD, "display_name": "Ada"}
    registered = await client.post("/register", json=body)
    conn = await asyncpg.connect(dsn)
    try:
        user_id: int = await conn.fetchval("SELECT id FROM users WHERE email = $1", body["email"])
        await conn.execute("UPDATE users SET email_verified_at = now() WHERE id = $1", user_id)
    finally:
        await conn.close()
    assert registered.status_code in (201, 409), registered.text
    login = {"email": body["email"], "password": _PASSWORD}
    token = (await client.post("/login", json=login)).json()["access_token"]
    order = {"items": [{"sku": "tea", "quantity": 1, "unit_price_cents": 250}]}
    headers = {"Authorization": f"Bearer {token}"}
    await client.post("/users/me/orders", json=order, headers=headers)
    return user_id, token


async def _cpu_per_request(client: httpx.AsyncClient, path: str, token: str, n: int) -> float:
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(n // 4):  # warm: caches, prepared statements, connections
        assert (await client.get(path, headers=headers)).status_code == 200
    started = time.thread_time()
    for _ in range(n):
        await client.get(path, headers=headers)
    return (time.thread_time() - started) / n * 1e6


async def _run(dsn: str) -> dict[str, dict[str, list[float]]]:
    await asyncio.to_thread(migrate, dsn)
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    _in_thread(sink.serve_forever)
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink.server_port}"
    sim = _sim_url()
    variants = dict(VARIANTS)
    for name, (module, variant) in _OPTIONAL.items():
        with contextlib.suppress(ImportError):
            __import__(module)
            variants[name] = variant
    figures: dict[str, dict[str, list[float]]] = {name: {} for name in variants}
    for _ in range(ROUNDS):
        for name, variant in variants.items():
            async with _client(dsn, sim, variant) as client:
                user_id, token = await _account(dsn, client)
                for route, path in (
                    ("GET /users/{id}", f"/users/{user_id}"),
                    ("GET /users/me/overview", "/users/me/overview"),
                ):
                    cpu = await _cpu_per_request(client, path, token, REQUESTS[route])
                    figures[name].setdefault(route, []).append(cpu)
    return figures


class _NullExporter(SpanExporter):
    """Accepts every batch: the layer's cost on the loop, not the export thread's."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return


async def _noop(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _layer_cpu(app: ASGIApp, n: int) -> float:
    scope = {"type": "http", "method": "GET", "path": "/users/1", "headers": [(b"host", b"b")]}

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        return

    started = time.thread_time()
    for _ in range(n):
        await app(dict(scope), receive, send)
    return (time.thread_time() - started) / n * 1e6


async def _layers() -> dict[str, list[float]]:
    from fastapi.telemetry._asgi import NativeTelemetry
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    native = NativeTelemetry(
        {
            "tracing": True,
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "tracer_provider": None,
            "meter_provider": None,
            "logger_provider": None,
            "auto_configure": False,
            "exclude": None,
        }
    )

    async def fastapi_native(scope: Scope, receive: Receive, send: Send) -> None:
        await native(app=_noop, scope=scope, receive=receive, send=send)

    figures: dict[str, list[float]] = {}
    for ratio in (1.0, 0.1):
        _sampler(ratio)
        async with Tracing(exporter=_NullExporter()):
            layers: dict[str, ASGIApp] = {
                "none": _noop,
                f"ours {ratio:.0%}": TraceRequests(_noop),
                f"fastapi native {ratio:.0%}": fastapi_native,
                f"contrib asgi {ratio:.0%}": OpenTelemetryMiddleware(_noop),
            }
            for _ in range(7):
                for name, layer in layers.items():
                    figures.setdefault(name, []).append(await _layer_cpu(layer, 3000))
    return figures


async def _queries(dsn: str) -> dict[str, list[float]]:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    tracer = trace.get_tracer("loopwise_bench")

    async def cpu(conn: asyncpg.Connection, own_span: bool) -> float:
        started = time.thread_time()
        for _ in range(1000):
            with tracer.start_as_current_span("request"):
                if own_span:
                    with tracer.start_as_current_span("SELECT", kind=trace.SpanKind.CLIENT):
                        await conn.fetchval("SELECT 1")
                else:
                    await conn.fetchval("SELECT 1")
        return (time.thread_time() - started) / 1000 * 1e6

    figures: dict[str, list[float]] = {}
    for ratio in (1.0, 0.1):
        _sampler(ratio)
        async with Tracing(exporter=_NullExporter()):
            for _ in range(5):
                for name in ("no query span", "own span", "asyncpg instrumentation"):
                    instrumentor = AsyncPGInstrumentor()
                    if name == "asyncpg instrumentation":
                        instrumentor.instrument()
                    conn = await asyncpg.connect(dsn)
                    try:
                        figure = await cpu(conn, own_span=name == "own span")
                    finally:
                        await conn.close()
                        if name == "asyncpg instrumentation":
                            instrumentor.uninstrument()
                    figures.setdefault(f"{name} {ratio:.0%}", []).append(figure)
    return figures


def _sampler(ratio: float) -> None:
    os.environ["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
    os.environ["OTEL_TRACES_SAMPLER_ARG"] = str(ratio)


def _medians(figures: dict[str, list[float]], what: str) -> str:
    lines = [f"| {what} | loop-thread CPU (median of rounds) |", "|---|---|"]
    lines += [f"| {name} | {statistics.median(v):.1f} µs |" for name, v in figures.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    mode = sys.argv[1]
    if mode == "layers":
        sys.stdout.write(_medians(asyncio.run(_layers()), "request-span layer, per call"))
        return
    if mode == "queries":
        figures = asyncio.run(_queries(sys.argv[2]))
        sys.stdout.write(_medians(figures, "per request span with one query"))
        return
    dsn = sys.argv[2]
    # As `loopwise serve` logs: the access line is formatted on the loop, written by a thread.
    configure_logging("json", "info")
    # httpx's INFO line per call would time this driver's own requests too.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    by_route = asyncio.run(_run(dsn))
    off = by_route["off"]
    lines = ["| variant | route | loop-thread CPU per request: median (rounds) | vs off |"]
    lines.append("|---|---|---|---|")
    for name, routes in by_route.items():
        for route, rounds in routes.items():
            median = statistics.median(rounds)
            ratio = median / statistics.median(off[route])
            each = ", ".join(f"{r:.0f}" for r in rounds)
            lines.append(f"| {name} | {route} | {median:.0f} µs ({each}) | {ratio:.2f}x |")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
