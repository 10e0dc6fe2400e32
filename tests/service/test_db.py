"""The database pool: bounded waits, and past saturation 503 instead of an unbounded queue.

``db.py`` extends asyncpg's private ``Pool._acquire`` (asyncpg waits for a connection
forever by default); the tests below fail loudly when asyncpg changes what that relies on.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import secrets
import shutil
import sys

import asyncpg
import asyncpg.pool
import httpx
import pytest
from asgi_lifespan import LifespanManager

from loopwise.service.app import create_app
from loopwise.service.db import Database, PoolExhausted, _BoundedWaitPool, _user_exists
from loopwise.service.settings import Settings
from tests.pool_holder import add_pool_holder


async def test_exhausted_pool_answers_503_not_a_queue(settings: Settings) -> None:
    """With every pooled connection busy, a request waits at most the acquire timeout."""
    configured = settings.model_copy(
        update={
            "db_pool_min": 1,
            "db_pool_max": 1,
            "db_acquire_timeout": 0.2,
            "jobs_in_process": False,
        }
    )
    app = create_app(configured)
    holder = add_pool_holder(app)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            held = asyncio.create_task(client.get(holder.path))
            await holder.holding.wait()
            # A well-formed token nobody holds: checking it needs the database.
            unknown = {"Authorization": f"Bearer {secrets.token_urlsafe(32)}"}
            busy = await client.get("/users/me", headers=unknown)
            holder.release.set()
            assert (await held).status_code == 200
            after = await client.get("/users/me", headers=unknown)
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "1"
    assert busy.headers["content-type"] == "application/problem+json"
    assert after.status_code == 401  # the pool serves again once the connection is back


def test_asyncpg_private_acquire_keeps_the_signature_we_extend() -> None:
    """``Pool._acquire(self, timeout)`` is a coroutine: the bounded wait overrides exactly it."""
    acquire = asyncpg.pool.Pool._acquire  # type: ignore[attr-defined]  # private, the point
    assert inspect.iscoroutinefunction(acquire)
    assert list(inspect.signature(acquire).parameters) == ["self", "timeout"]
    assert _BoundedWaitPool._acquire is not acquire


async def test_every_acquire_path_goes_through_the_bounded_wait(database_url: str) -> None:
    """``acquire()`` and the fetch/execute helpers both wait in ``_acquire``, within the bound."""
    async with Database(database_url, min_size=1, max_size=1, acquire_timeout=0.05) as db:
        async with db.pool.acquire() as held:  # the one connection, busy
            assert await held.fetchval("SELECT 1") == 1
            with pytest.raises(PoolExhausted, match="all 1 in use"):
                await db.pool.fetchval("SELECT 1")
            with pytest.raises(PoolExhausted):
                async with db.pool.acquire():
                    pass
        assert await db.pool.fetchval("SELECT 2") == 2  # free again once it is back


async def test_processes_starting_together_create_the_server_user_once() -> None:
    """On a machine that never ran the embedded server, racing starts all succeed.

    The suite's workers start together on a fresh machine; a second ``useradd`` for the
    same name fails ("already in use"), so the starts take turns. Runs on a throwaway name.
    """
    name = f"lw{secrets.token_hex(4)}"
    script = f"from loopwise.service.db import ensure_server_user; ensure_server_user({name!r})"
    starts = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(3)
    ]
    try:
        outcomes = [(await start.wait(), (await start.stderr.read()).decode()) for start in starts]  # type: ignore[union-attr]
        assert outcomes == [(0, "")] * len(starts)
        assert await asyncio.to_thread(_user_exists, name) is (os.geteuid() == 0)
    finally:
        if await asyncio.to_thread(_user_exists, name):
            userdel = await asyncio.to_thread(shutil.which, "userdel", path="/usr/sbin:/sbin")
            assert userdel is not None
            removal = await asyncio.create_subprocess_exec(userdel, name)
            await removal.wait()
