"""The naive version of the same endpoints, built as a well-read blog post describes.

This is the comparison the benchmark exists for, so it follows the blog's patterns
faithfully rather than fixing them ("5 Async Python Patterns"):

- a new asyncpg connection per query, opened and closed by an async context manager
  (pattern 2), with the overview's three reads fanned out in a ``TaskGroup`` (pattern 1);
- outbound calls through a new ``httpx.AsyncClient`` per call, under ``asyncio.timeout``
  that returns ``None`` on timeout (pattern 4), limited by one ``Semaphore(10)`` shared by
  every host (pattern 3);
- the welcome email sent with FastAPI ``BackgroundTasks`` after the response (pattern 5),
  password hashing in ``asyncio.to_thread`` (the golden rule).

Same schema, same request and response shapes as loopwise.
Environment: ``LOOPWISE_BENCH_DSN`` (required); ``LOOPWISE_BENCH_DOWNSTREAMS``, a
comma-separated list of ``name=url`` the overview calls (``loyalty`` and ``shipments``, the
simulator's APIs); ``LOOPWISE_BENCH_SMTP_PORT``, the loopback SMTP server for the email.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiosmtplib
import asyncpg
import httpx
from argon2 import PasswordHasher
from fastapi import BackgroundTasks, FastAPI, Header, HTTPException
from pydantic import BaseModel

from loopwise_bench.apps.floor import User

__all__ = ["create_app", "fetch_all", "resilient_fetch"]

_AUTHENTICATE = """
    SELECT u.id, u.email, u.display_name, u.created_at
    FROM sessions s JOIN users u ON u.id = s.user_id
    WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
"""
_RECENT_ORDERS = """
    SELECT id, total_cents, created_at FROM orders
    WHERE user_id = $1 ORDER BY id DESC LIMIT 5
"""
_PREFERENCES = "SELECT document FROM preferences WHERE user_id = $1"
_INSERT_USER = """
    INSERT INTO users (email, display_name, password_hash) VALUES ($1, $2, $3)
    RETURNING id, email, display_name, created_at
"""


class Registration(BaseModel):
    email: str
    password: str
    display_name: str


async def resilient_fetch(url: str, timeout: float = 5.0) -> httpx.Response | None:  # noqa: ASYNC109 -- the blog's own signature
    """The blog's pattern 4: a new client per call, ``None`` on timeout."""
    try:
        async with asyncio.timeout(timeout), httpx.AsyncClient() as client:
            return await client.get(url)
    except TimeoutError:
        return None


async def fetch_all(
    urls: list[str],
    semaphore: asyncio.Semaphore,
    timeout: float = 5.0,  # noqa: ASYNC109 -- the blog's own signature
) -> list[httpx.Response | None]:
    """The blog's pattern 3 around pattern 4: one global semaphore, ``gather`` everything."""

    async def limited(url: str) -> httpx.Response | None:
        async with semaphore:
            return await resilient_fetch(url, timeout)

    return await asyncio.gather(*(limited(url) for url in urls))


def _downstreams() -> dict[str, str]:
    raw = os.environ.get("LOOPWISE_BENCH_DOWNSTREAMS", "")
    pairs = (item.split("=", 1) for item in raw.split(",") if "=" in item)
    return {name.strip(): url.strip() for name, url in pairs}


def create_app() -> FastAPI:
    dsn = os.environ["LOOPWISE_BENCH_DSN"]
    downstreams = _downstreams()
    smtp_port = int(os.environ.get("LOOPWISE_BENCH_SMTP_PORT", "25"))
    hasher = PasswordHasher()
    # The blog's module-level `semaphore = asyncio.Semaphore(10)`, one per process,
    # built here rather than at import so the module stays importable anywhere.
    semaphore = asyncio.Semaphore(10)

    @asynccontextmanager
    async def get_db() -> AsyncIterator[asyncpg.Connection]:
        conn = await asyncpg.connect(dsn)
        try:
            yield conn
        finally:
            await conn.close()

    async def current_user(authorization: str | None) -> dict[str, Any]:
        token = (authorization or "").removeprefix("Bearer ").strip()
        async with get_db() as db:
            row = await db.fetchrow(_AUTHENTICATE, hashlib.sha256(token.encode()).digest())
        if row is None:
            raise HTTPException(401)
        return dict(row)

    async def call(url: str) -> Any:
        async with semaphore:
            response = await resilient_fetch(url)
        return None if response is None else response.json()

    app = FastAPI()

    @app.get("/users/{user_id}")
    async def user(user_id: int, authorization: str | None = Header(None)) -> User:
        me = await current_user(authorization)
        if me["id"] != user_id:
            raise HTTPException(404)
        return User(**me)

    @app.get("/users/me/overview")
    async def overview(authorization: str | None = Header(None)) -> dict[str, Any]:
        me = await current_user(authorization)

        async def orders() -> list[dict[str, Any]]:
            async with get_db() as db:
                return [dict(r) for r in await db.fetch(_RECENT_ORDERS, me["id"])]

        async def preferences() -> Any:
            async with get_db() as db:
                document = await db.fetchval(_PREFERENCES, me["id"])
            return None if document is None else json.loads(document)

        async def shipments(url: str) -> Any:
            # The blog's fetch_all over the recent orders, each through a new client.
            recent = await orders()
            return await asyncio.gather(*(call(f"{url}/shipments/{o['id']}") for o in recent))

        async with asyncio.TaskGroup() as tg:
            orders_task = tg.create_task(orders())
            preferences_task = tg.create_task(preferences())
            downstream_tasks = {}
            if "loyalty" in downstreams:
                url = f"{downstreams['loyalty']}/loyalty/{me['id']}"
                downstream_tasks["loyalty"] = tg.create_task(call(url))
            if "shipments" in downstreams:
                downstream_tasks["shipments"] = tg.create_task(shipments(downstreams["shipments"]))
        return {
            "profile": User(**me).model_dump(mode="json"),
            "recent_orders": orders_task.result(),
            "preferences": preferences_task.result(),
            **{name: task.result() for name, task in downstream_tasks.items()},
            "degraded": [name for name, task in downstream_tasks.items() if task.result() is None],
        }

    async def send_welcome(email: str, name: str) -> None:
        # The blog's pattern 5: after the response, in the same process, once.
        message = f"Subject: Welcome\r\nTo: {email}\r\n\r\nWelcome, {name}!\r\n"
        await aiosmtplib.send(
            message,
            sender="naive@bench.example.com",
            recipients=[email],
            hostname="127.0.0.1",
            port=smtp_port,
            use_tls=False,
            start_tls=False,
        )

    @app.post("/register", status_code=201)
    async def register(body: Registration, background: BackgroundTasks) -> User:
        # The golden rule the blog states: blocking work in asyncio.to_thread.
        password_hash = await asyncio.to_thread(hasher.hash, body.password)
        async with get_db() as db:
            row = await db.fetchrow(_INSERT_USER, body.email, body.display_name, password_hash)
        assert row is not None
        background.add_task(send_welcome, body.email, body.display_name)
        return User(**dict(row))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
