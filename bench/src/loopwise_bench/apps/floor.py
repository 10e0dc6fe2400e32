"""The floor of our read path: FastAPI + one pooled asyncpg single-row read, nothing else.

No auth, no middleware, no logging, no metrics: what ``GET /users/{id}`` would cost with
only the framework and the driver. loopwise's own endpoint is compared against it.

Environment: ``LOOPWISE_BENCH_DSN`` (required), ``LOOPWISE_BENCH_POOL_MAX`` (default 10,
loopwise's own default).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

__all__ = ["USER_BY_ID", "User", "create_app"]

USER_BY_ID = "SELECT id, email, display_name, created_at FROM users WHERE id = $1"


class User(BaseModel):
    id: int
    email: str
    display_name: str
    created_at: datetime


def create_app() -> FastAPI:
    dsn = os.environ["LOOPWISE_BENCH_DSN"]
    pool_max = int(os.environ.get("LOOPWISE_BENCH_POOL_MAX", "10"))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, asyncpg.Pool]]:
        async with asyncpg.create_pool(dsn, min_size=2, max_size=pool_max) as pool:
            yield {"pool": pool}

    app = FastAPI(lifespan=lifespan)

    @app.get("/users/{user_id}")
    async def user(user_id: int, request: Request) -> User:
        pool: asyncpg.Pool = request.state.pool
        row = await pool.fetchrow(USER_BY_ID, user_id)
        if row is None:
            # A baseline app, not service code: FastAPI's own 404 is what it would use.
            raise HTTPException(404)
        return User(**dict(row))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
