"""Alembic environment: one transaction, serialised across processes by an advisory lock."""

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from loopwise.service.migrate import MIGRATION_LOCK_KEY, sqlalchemy_url


def _run(connection: Connection) -> None:
    # Migrations and the version bump commit together (PostgreSQL DDL is transactional),
    # and the lock makes a second process wait, then find nothing left to do.
    context.configure(connection=connection, transaction_per_migration=False)
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


async def _main() -> None:
    dsn = context.config.attributes["dsn"]
    engine = create_async_engine(sqlalchemy_url(dsn), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("loopwise migrations run online only")
# Read the revision files now, before the loop starts: file I/O has no place on a loop.
context.script.get_heads()
asyncio.run(_main())
