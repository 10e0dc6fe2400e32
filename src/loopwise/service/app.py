"""The ASGI application: ``create_app(settings)`` builds it; its lifespan owns the resources.

Nothing is created at import. The lifespan opens the database pool, checks which schema
revision the code expects, and closes everything in reverse order on shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from loopwise.service import health
from loopwise.service.db import Database
from loopwise.service.jobs import BackgroundWork, Worker, job_handlers
from loopwise.service.logs import configure_logging, get_logger
from loopwise.service.middleware import BodySizeLimit, RequestLog
from loopwise.service.migrate import expected_revision
from loopwise.service.problems import install_problem_handlers
from loopwise.service.settings import Settings, load_settings
from loopwise.service.state import AppState

__all__ = ["create_app", "create_app_from_env"]

_log = get_logger("loopwise.app")


class MissingDatabaseUrl(RuntimeError):
    """The app was built without a database URL; the CLI provides one in embedded mode."""


def create_app(settings: Settings) -> FastAPI:
    """Build the app for ``settings``, which must name a database by URL."""
    if settings.database_url is None:
        raise MissingDatabaseUrl(
            "create_app needs settings.database_url; `loopwise serve` starts an embedded "
            "PostgreSQL and sets it"
        )
    dsn = str(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[AppState]:
        async with AsyncExitStack() as stack:
            db = await stack.enter_async_context(Database.from_settings(settings, dsn))
            revision = await asyncio.to_thread(expected_revision)
            # Jobs: best-effort work drains after the worker; the worker stops before the pool.
            background = await stack.enter_async_context(
                BackgroundWork(grace=settings.shutdown_grace)
            )
            worker = None
            if settings.jobs_in_process:
                worker = await stack.enter_async_context(
                    Worker.from_settings(settings, db.pool, job_handlers(settings), dsn)
                )
            _log.info("started", pool_max=settings.db_pool_max, schema_revision=revision)
            yield AppState(
                settings=settings,
                db=db,
                schema_revision=revision,
                background=background,
                job_worker=worker,
            )
            _log.info("stopping")

    app = FastAPI(
        title="loopwise",
        summary="An async account service built on production-grade async patterns.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    app.include_router(health.router)
    # Added last runs first: the request id exists before anything else can log.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestLog)
    return app


def create_app_from_env() -> FastAPI:
    """Factory for server workers: settings come from the environment the CLI prepared."""
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    return create_app(settings)
