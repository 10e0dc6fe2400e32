"""Liveness and readiness probes.

``/healthz`` answers while the process lives and touches nothing else, so a slow database
never gets a healthy process restarted. ``/readyz`` answers 200 only when PostgreSQL
answers within ``LOOPWISE_READY_TIMEOUT`` seconds, its schema is the one this code
was written for, and the instance is not draining after SIGTERM (``service/drain.py``).
"""

from __future__ import annotations

import asyncio

import asyncpg
from fastapi import APIRouter, Request
from pydantic import BaseModel

from loopwise.service.deps import Db, Settings_
from loopwise.service.exceptions import Unavailable
from loopwise.service.http.responses import Answer, declare
from loopwise.service.state import lifespan_state

__all__ = ["router"]

router = APIRouter(tags=["health"])

NOT_READY = Answer(
    503, "Not ready: PostgreSQL is unreachable or its schema is not this code's.", ("Retry-After",)
)


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    schema_revision: str | None


@router.get("/healthz")
async def healthz() -> Health:
    """The process is alive and its event loop is turning."""
    return Health(status="ok")


@router.get("/readyz", responses=declare(NOT_READY))
async def readyz(request: Request, db: Db, settings: Settings_) -> Ready:
    """PostgreSQL is reachable, the schema is current, and the instance is not draining."""
    state = lifespan_state(request)
    if state["drain"].draining:
        # Checked first, and without touching the pool: a draining instance must drop out
        # of rotation whatever the database says.
        raise Unavailable("draining: this instance is shutting down", retry_after=1)
    expected = state["schema_revision"]
    try:
        async with asyncio.timeout(settings.ready_timeout):
            async with db.pool.acquire() as conn:
                current = await conn.fetchval("SELECT version_num FROM alembic_version")
    # InternalClientError: asyncpg's own state error when the server killed the connection
    # mid-query (seen under load right after pg_terminate_backend); still "unreachable".
    except (
        TimeoutError,
        OSError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.InternalClientError,
    ) as exc:
        raise Unavailable(f"database unreachable: {type(exc).__name__}", retry_after=1) from None
    if current != expected:
        raise Unavailable(f"schema is at {current!r}, this code expects {expected!r}")
    return Ready(status="ready", schema_revision=current)
