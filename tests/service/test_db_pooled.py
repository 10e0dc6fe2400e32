"""The service behind a real PgBouncer in transaction pooling mode (Debian's, 1.18)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from loopwise.service.app import create_app
from loopwise.service.db import Database, transaction
from loopwise.service.settings import Settings
from tests.cluster.engines import PgBouncer, scratch_directory
from tests.pg import database_name

pytestmark = pytest.mark.blocks_loop  # starts PgBouncer


@pytest.fixture
async def bouncer(database_url: str) -> AsyncIterator[PgBouncer]:
    """PgBouncer (transaction pooling, 3 server connections) in front of this test's database."""
    host, port, owner = await asyncio.to_thread(_server_address, database_url)  # globs a dir
    # The role setting the docs ask for behind a pooler (see service/db.py), set on this
    # test's own database: the shared server's configuration is left alone.
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'ALTER DATABASE "{database_name(database_url)}" SET jit = off')
    finally:
        await conn.close()
    async with (
        scratch_directory() as workdir,
        PgBouncer(
            Path(workdir),
            server_host=host,
            server_port=port,
            run_as=owner,
            database=database_name(database_url),
            # Fewer server connections than clients: consecutive transactions of one client
            # connection land on different servers, the case that breaks session state.
            pool_size=3,
        ) as pgbouncer,
    ):
        yield pgbouncer


def _server_address(dsn: str) -> tuple[str, int, str]:
    """Where PgBouncer finds the test's PostgreSQL, and whom it must run as to get there.

    TCP as ``nobody``; or the embedded server's socket directory (``?host=/dir``), whose
    port is in the socket's name (``.s.PGSQL.<port>``), as that directory's owner.
    """
    parts = urlsplit(dsn)
    if parts.hostname:
        return parts.hostname, parts.port or 5432, "nobody"
    directory = Path(parse_qs(parts.query)["host"][0])
    sockets = sorted(directory.glob(".s.PGSQL.*[0-9]"))
    port = int(sockets[0].name.rsplit(".", 1)[1]) if sockets else 5432
    return str(directory), port, directory.owner()


def _pooled(settings: Settings, bouncer: PgBouncer, direct: str) -> Settings:
    return settings.model_copy(
        update={"database_url": bouncer.dsn(), "database_direct_url": direct, "db_pool_max": 8}
    )


async def test_every_endpoint_works_through_transaction_pooling(
    settings: Settings, bouncer: PgBouncer, database_url: str
) -> None:
    """Register, login, reads, orders, overview, logout: concurrently, all through PgBouncer."""
    app = create_app(_pooled(settings, bouncer, database_url))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://lw.test") as c:

            async def journey(n: int) -> None:
                email = f"pooled{n}@example.com"
                body = {"email": email, "password": "correct horse battery", "display_name": "A"}
                registered = await c.post("/register", json=body)
                assert registered.status_code == 201, registered.text
                login = await c.post("/login", json={"email": email, "password": body["password"]})
                assert login.status_code == 200, login.text
                auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
                user_id = registered.json()["id"]
                # Orders are for verified addresses; the link itself is proven in
                # tests/service/accounts/test_verification.py, so here it is marked directly.
                direct = await asyncpg.connect(database_url)
                try:
                    await direct.execute(
                        "UPDATE users SET email_verified_at = now() WHERE id = $1", user_id
                    )
                finally:
                    await direct.close()
                for _ in range(5):
                    assert (await c.get(f"/users/{user_id}", headers=auth)).status_code == 200
                    order = {"items": [{"sku": "A-1", "quantity": 2, "unit_price_cents": 150}]}
                    placed = await c.post("/users/me/orders", json=order, headers=auth)
                    assert placed.status_code == 201, placed.text
                    overview = await c.get("/users/me/overview", headers=auth)
                    assert overview.status_code == 200, overview.text
                assert (await c.post("/logout", headers=auth)).status_code == 204
                assert (await c.get("/users/me", headers=auth)).status_code == 401

            async with asyncio.TaskGroup() as tg:
                for n in range(12):
                    tg.create_task(journey(n))
            assert (await c.get("/readyz")).status_code == 200
    # Every user and order went through the pooler into the one database.
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM users") == 12
        assert await conn.fetchval("SELECT count(*) FROM orders") == 60
        # The welcome jobs were enqueued in the register transactions, through the pooler.
        assert await conn.fetchval("SELECT count(*) FROM jobs") == 12
    finally:
        await conn.close()


async def test_transactions_carry_their_timeouts_as_set_local(bouncer: PgBouncer) -> None:
    """Pooled: transaction() sets the timeouts per transaction; nothing leaks to the session."""
    db = Database(bouncer.dsn(), min_size=1, max_size=1, statement_timeout=3, pooled=True)
    async with db:
        async with transaction(db.pool) as conn:
            assert await conn.fetchval("SHOW statement_timeout") == "3s"
            assert await conn.fetchval("SHOW idle_in_transaction_session_timeout") == "10s"
        # Outside a transaction the server's default holds: no SET went to the session.
        assert await db.pool.fetchval("SHOW statement_timeout") == "0"


async def test_a_runaway_statement_is_cancelled_through_the_pooler(bouncer: PgBouncer) -> None:
    """Outside transaction(), asyncpg's timeout cancels the query on the server via PgBouncer."""
    db = Database(bouncer.dsn(), min_size=1, max_size=1, statement_timeout=0.5, pooled=True)
    async with db:
        with pytest.raises(TimeoutError):
            await db.pool.fetchval("SELECT pg_sleep(30)")
        # The server connection is free again at once: the statement really was cancelled.
        assert await db.pool.fetchval("SELECT 1", timeout=5) == 1


async def test_per_connection_settings_are_refused_by_the_pooler(bouncer: PgBouncer) -> None:
    """Why pooled mode exists: PgBouncer refuses the direct mode's startup settings."""
    db = Database(bouncer.dsn(), min_size=1, max_size=1, pooled=False)
    with pytest.raises(asyncpg.PostgresError, match="unsupported startup parameter"):
        await db.open()


async def test_cached_prepared_statements_break_under_transaction_pooling(
    bouncer: PgBouncer,
) -> None:
    """Why the statement cache is off: a named statement stays on the server that parsed it."""
    a, b = [await asyncpg.connect(bouncer.dsn()) for _ in range(2)]
    try:
        query = "SELECT $1::int + 1"
        assert await a.fetchval(query, 1) == 2  # parsed and cached on the server `a` had
        # PgBouncer hands out its most recently used server first: `b` now holds that one
        # for its whole transaction, so `a`'s next query runs on the other server.
        async with b.transaction():
            assert await b.fetchval("SELECT 1") == 1
            with pytest.raises(asyncpg.exceptions.InvalidSQLStatementNameError):
                await a.fetchval(query, 2)
    finally:
        a.terminate()
        b.terminate()
