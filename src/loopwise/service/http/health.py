"""Liveness and readiness probes.

``/healthz`` answers while the process lives and touches nothing else, so a slow database
never gets a healthy process restarted. ``/readyz`` answers 200 only when PostgreSQL
answers within ``LOOPWISE_READY_TIMEOUT`` seconds and its schema is the one this code
was written for.
"""

from __future__ import annotations

import asyncio

import asyncpg
from fastapi import APIRouter, Request
from pydantic import BaseModel

from loopwise.service.deps import Db, Settings_
from loopwise.service.exceptions import Unavailable

__all__ = ["router"]

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    schema_revision: str | None


@router.get("/healthz")
async def healthz() -> Health:
    """The process is alive and its event loop is turning."""
    return Health(status="ok")


@router.get("/readyz", responses={503: {"description": "Not ready: see `detail`."}})
async def readyz(request: Request, db: Db, settings: Settings_) -> Ready:
    """PostgreSQL is reachable and the schema is current."""
    expected: str | None = request.state.schema_revision
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
