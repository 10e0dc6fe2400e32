"""Migrations: idempotent, and safe when several processes run them at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from loopwise.service.migrate import expected_revision, migrate
from tests.pg import with_database
from tests.processes import run_loopwise


@pytest.fixture
async def empty_database(pg_admin_dsn: str) -> AsyncIterator[str]:
    """A database with no schema at all, dropped afterwards."""
    name = f"loopwise_empty_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield with_database(pg_admin_dsn, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _revision(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [
            r["version_num"] for r in await conn.fetch("SELECT version_num FROM alembic_version")
        ]
    finally:
        await conn.close()


async def test_migrate_twice_is_a_no_op(empty_database: str) -> None:
    """Running migrations again on a current schema changes nothing and does not fail."""
    await asyncio.to_thread(migrate, empty_database)
    head = await asyncio.to_thread(expected_revision)
    assert await _revision(empty_database) == [head]
    await asyncio.to_thread(migrate, empty_database)
    assert await _revision(empty_database) == [head]


async def test_concurrent_migrate_processes(empty_database: str) -> None:
    """Several `loopwise migrate` processes at once all succeed and migrate exactly once."""
    env = {"LOOPWISE_DATABASE_URL": empty_database}
    results = await asyncio.gather(*(run_loopwise("migrate", env=env) for _ in range(4)))
    assert [status for status, _ in results] == [0, 0, 0, 0], results
    head = await asyncio.to_thread(expected_revision)
    assert await _revision(empty_database) == [head]


async def test_migrate_reports_an_unreachable_server() -> None:
    """A database that cannot be reached ends `migrate` with one line and exit 1."""
    env = {"LOOPWISE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    status, stderr = await run_loopwise("migrate", env=env)
    assert status == 1
    assert stderr.strip().startswith("loopwise: cannot reach PostgreSQL to migrate:")
    assert "Traceback" not in stderr
