"""The ASGI application: ``create_app(settings)`` builds it; its lifespan owns the resources.

Nothing is created at import. The lifespan opens the database pool and the downstream
clients, checks which schema revision the code expects, and closes everything in reverse
order on shutdown.
"""

from __future__ import annotations

import gc
import importlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import APIRouter, FastAPI
from starlette.routing import BaseRoute

from loopwise.patterns import BlockingPool, LoopWatchdog
from loopwise.service.accounts.emails import account_job_handlers
from loopwise.service.accounts.hot_reads import install_hot_reads
from loopwise.service.accounts.preferences import load_timezones
from loopwise.service.accounts.routes import routers as account_routers
from loopwise.service.db import Database
from loopwise.service.deps import BEARER_SCHEME, authenticates
from loopwise.service.downstreams import Downstreams
from loopwise.service.drain import Drain
from loopwise.service.http import health
from loopwise.service.http.admission import EXEMPT_PATHS, Admission, AdmissionControl
from loopwise.service.http.api_docs import install_api_docs
from loopwise.service.http.bodies import BodyFirst, BodyReadStats
from loopwise.service.http.compression import Compression
from loopwise.service.http.metrics import Metrics, metrics_router
from loopwise.service.http.middleware import BodySizeLimit, RequestLog
from loopwise.service.http.openapi import DESCRIPTION, document_api
from loopwise.service.http.problems import install_problem_handlers
from loopwise.service.http.proxies import TrustedProxies
from loopwise.service.http.response_headers import HeadAsGet, SecurityHeaders
from loopwise.service.identity.passwords import Passwords
from loopwise.service.identity.preferences_cache import PreferencesCache
from loopwise.service.identity.session_cache import SessionCache
from loopwise.service.jobs import QueueDepth, Worker
from loopwise.service.logs import configure_logging, get_logger
from loopwise.service.migrate import expected_revision
from loopwise.service.redaction import secrets_of
from loopwise.service.settings import Settings, load_settings
from loopwise.service.state import AppState
from loopwise.service.tracing import TraceRequests, Tracing

__all__ = ["create_app", "create_app_from_env"]

_log = get_logger("loopwise.app")


class MissingDatabaseUrl(RuntimeError):
    """The app was built without a database URL; the CLI provides one in embedded mode."""


def create_app(
    settings: Settings, *, handle_sigterm: bool = False, hot_reads: bool = True
) -> FastAPI:
    """Build the app for ``settings``, which must name a database by URL.

    Args:
        settings: validated settings; ``database_url`` must be set.
        handle_sigterm: make SIGTERM start a drain (``service/drain.py``); for server
            workers only, whose lifespan runs on the loop granian serves from.
        hot_reads: serve the hottest reads by handlers of our own (``accounts/hot_reads.py``);
            off only to compare their answers with FastAPI's.
    """
    if settings.database_url is None:
        raise MissingDatabaseUrl(
            "create_app needs settings.database_url; `loopwise serve` starts an embedded "
            "PostgreSQL and sets it"
        )
    dsn = str(settings.database_url)
    # LISTEN needs a session of its own: behind a transaction pooler, the direct URL.
    listen_dsn = settings.direct_dsn(dsn)
    # Built with the app, not in the lifespan: the middleware below observes into it.
    metrics = Metrics()
    gate = Admission(
        limit=settings.max_in_flight,
        queue=settings.admission_queue,
        wait=settings.admission_wait,
    )
    body_reads = BodyReadStats()
    metrics.track("http_bodies", body_reads)

    drain = Drain(delay=settings.drain_delay)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[AppState]:
        async with AsyncExitStack() as stack:
            if handle_sigterm:
                await stack.enter_async_context(drain.handling_sigterm())
            if settings.otel_enabled:
                # In the lifespan, so in each server worker after the fork (the exporter's
                # thread would not survive it); closed last, it flushes every other's spans.
                metrics.track("tracing", await stack.enter_async_context(Tracing()))
            blocking, watchdog = await _open_off_loop(stack, settings, metrics)
            db = await stack.enter_async_context(Database.from_settings(settings, dsn))
            metrics.track("db_pool", db)
            metrics.track("jobs_queue", QueueDepth(db))
            revision = await blocking.run(expected_revision)
            await blocking.run(_import_request_path_modules, settings)
            # Build the OpenAPI schema now: it reads source files, which has no place on
            # the loop, and /openapi.json and the 405 handler then serve the cached copy.
            await blocking.run(app.openapi)
            # Accounts: the argon2 hashing pool, and the zone names (read from disk once).
            passwords = await stack.enter_async_context(Passwords.from_settings(settings))
            metrics.track("offload", passwords.pool)
            # The session cache's rule, so its TTL, size and LISTEN connection
            # (docs/operations/sessions.md).
            preferences = PreferencesCache(
                ttl=settings.session_cache_ttl, max_entries=settings.session_cache_size
            )
            sessions = await stack.enter_async_context(
                SessionCache(
                    listen_dsn,
                    ttl=settings.session_cache_ttl,
                    max_entries=settings.session_cache_size,
                    also=[preferences],
                )
            )
            metrics.track("session_cache", sessions)
            metrics.track("preferences_cache", preferences)
            timezones = await blocking.run(load_timezones)
            # Outbound: one shared client per configured downstream, so connections are reused.
            downstreams = await stack.enter_async_context(Downstreams.from_settings(settings))
            metrics.track("downstream", downstreams)
            # Jobs: the worker stops before the pool it uses.
            worker = None
            if settings.jobs_in_process:
                worker = await stack.enter_async_context(
                    Worker.from_settings(
                        settings, db.pool, account_job_handlers(settings, db.pool), listen_dsn
                    )
                )
                metrics.track("jobs", worker)
            metrics.track("http_requests", gate)
            # Unwound first: admitted requests finish before anything they use closes.
            stack.push_async_callback(gate.drain, settings.shutdown_grace)
            _freeze_startup_objects(stack)
            _log.info("started", pool_max=settings.db_pool_max, schema_revision=revision)
            yield AppState(
                settings=settings,
                drain=drain,
                db=db,
                schema_revision=revision,
                blocking=blocking,
                watchdog=watchdog,
                passwords=passwords,
                sessions=sessions,
                preferences=preferences,
                timezones=timezones,
                downstreams=downstreams,
                job_worker=worker,
            )
            _log.info("stopping")

    app = FastAPI(
        title="loopwise",
        summary="An async account service built on production-grade async patterns.",
        description=DESCRIPTION,
        version="0.1.0",
        lifespan=lifespan,
        license_info={"name": "MIT", "identifier": "MIT"},
        # Relative: the server that served this document, wherever it is deployed.
        servers=[{"url": "/", "description": "The server that serves this document."}],
        # FastAPI's own OpenTelemetry instrumentation asks for the global providers on
        # every request even when none is configured. Off: metrics are Prometheus's, and
        # the request spans are service/tracing.py's (docs/operations/observability.md
        # compares the costs).
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # Served from this process's own assets (api_docs.py), not FastAPI's CDN pages.
        docs_url=None,
        redoc_url=None,
        # Starlette built the trailing-slash redirect's Location from the Host header, so
        # `Host: evil.example` sent clients elsewhere; one URL per resource, no redirect.
        redirect_slashes=False,
    )
    install_problem_handlers(app)
    install_api_docs(app)
    document_api(app, shed_exempt=EXEMPT_PATHS, scheme=BEARER_SCHEME, requires_scheme=authenticates)
    documentation = list(app.router.routes)  # /openapi.json and /docs: FastAPI's and ours
    _add_routes(app, *account_routers, health.router)
    if hot_reads:  # their spans are TraceRequests', around every route's handler
        install_hot_reads(app)
    if settings.metrics_enabled:
        _add_routes(app, metrics_router(metrics))
    _move_to_the_end(app, documentation)
    # Added last runs first: the request id exists before anything else can log.
    if settings.gzip_min_bytes:
        # Innermost: the access log and metrics see the status, and a request shed by
        # admission control never reaches it.
        app.add_middleware(Compression, minimum_size=settings.gzip_min_bytes)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(HeadAsGet)  # inside the access log, which then says "HEAD"
    if settings.trusted_proxies:
        app.add_middleware(TrustedProxies, networks=settings.trusted_proxies)
    app.add_middleware(
        RequestLog, observe=metrics.observe_request if settings.metrics_enabled else None
    )
    if settings.otel_enabled:
        app.add_middleware(TraceRequests)  # around the access log, which then has its ids
    app.add_middleware(AdmissionControl, gate=gate)  # sheds before anything of the app runs
    # Outside the gate: a request takes a slot only once its body has arrived.
    app.add_middleware(
        BodyFirst,
        timeout=settings.body_timeout,
        max_readers=settings.max_body_readers,
        max_bytes=settings.max_body_bytes,
        stats=body_reads,
    )
    app.add_middleware(SecurityHeaders)  # outermost: the gate's own 503 carries them too
    return app


def _import_request_path_modules(settings: Settings) -> None:
    """Import now, off the loop, what serving a request would otherwise import on it.

    anyio loads its asyncio backend the first time it is asked for it: FastAPI's ``yield``
    dependencies (the overview's deadline) and httpx ask, so the first overview after
    start imported ~15 modules on the loop, a 107 ms ``event_loop_stalled``. The backend
    is a private module, imported by the name anyio itself uses
    (``anyio._core._eventloop.get_async_backend``); if anyio renames it, start-up fails
    here, and ``tests/service/test_app.py`` checks that no request imports anything.
    The Redis-backed limits, imported on first use, are imported here when configured.
    """
    importlib.import_module("anyio._backends._asyncio")
    if settings.redis_url is not None:
        importlib.import_module("loopwise.patterns.shared_breaker")
        importlib.import_module("loopwise.patterns.shared_limits")


def _freeze_startup_objects(stack: AsyncExitStack) -> None:
    """Exempt what start-up built from the cyclic garbage collector, until shutdown.

    The app, its routes, the Pydantic schemas and the libraries are ~120K objects that live
    as long as the process; every full collection walked them all, ~100 ms with the loop
    stopped, several times a minute under load (the watchdog's stalls in the 10-minute soak,
    each one a burst of overview 503s past their 100 ms budget). ``gc.freeze`` moves them to
    the permanent generation (the CPython docs' advice for long-lived servers); objects made
    afterwards are collected as usual.
    """
    gc.freeze()
    stack.callback(gc.unfreeze)


def _add_routes(app: FastAPI, *routers: APIRouter) -> None:
    """Register the routers' routes on the app's own router, flat, in order.

    FastAPI 0.165's ``include_router`` keeps each router as a lazily resolved branch and
    matches a request through every branch twice (measured: a third of the CPU of
    ``GET /users/{id}``). Ours have no prefix or router-level dependencies to combine, so
    their routes are matched directly, in one pass, as Starlette does.
    """
    for router in routers:
        if router.prefix or router.dependencies:
            raise ValueError("only routers without a prefix or dependencies can be flattened")
        app.router.routes.extend(router.routes)


def _move_to_the_end(app: FastAPI, routes: list[BaseRoute]) -> None:
    """Match ``routes`` (the documentation's, read by people) after the API's.

    A request is matched against the routes in order; the five documentation routes came
    first, and matching them was ~8% of the loop's CPU for ``GET /users/{id}``
    (cProfile, ``loopwise-bench request-cost``). No documentation path is also an API
    path, so the order between the two sets changes no answer.
    """
    kept = [route for route in app.router.routes if route not in routes]
    app.router.routes[:] = [*kept, *routes]


async def _open_off_loop(
    stack: AsyncExitStack, settings: Settings, metrics: Metrics
) -> tuple[BlockingPool, LoopWatchdog | None]:
    """Metrics, the loop watchdog and the blocking-call pool, closed by ``stack``."""
    await stack.enter_async_context(metrics)
    watchdog = None
    if settings.watchdog_enabled:
        watchdog = LoopWatchdog(
            threshold=settings.watchdog_threshold,
            interval=settings.watchdog_interval,
            on_lag=metrics.loop_lag.observe,
        )
        await stack.enter_async_context(watchdog)
        metrics.track("event_loop", watchdog)
    blocking = BlockingPool(
        "blocking", max_workers=settings.blocking_workers, max_queue=settings.blocking_queue
    )
    await stack.enter_async_context(blocking)
    metrics.track("offload", blocking)
    return blocking, watchdog


def create_app_from_env() -> FastAPI:
    """Factory for server workers: settings come from the environment the CLI prepared."""
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level, secrets=secrets_of(settings))
    return create_app(settings, handle_sigterm=True)
