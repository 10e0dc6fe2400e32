"""How every ``loopwise`` command starts: valid settings, then a database to use.

Every subcommand validates settings first; a bad value ends it with one line naming the
setting and the rule, and exit status 2, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import NoReturn, TypeVar
from urllib.parse import urlsplit

import asyncpg
import typer

from loopwise.service.db import EmbeddedUnavailable, embedded_postgres
from loopwise.service.logs import configure_logging, get_logger
from loopwise.service.redaction import Redactor, secrets_of
from loopwise.service.settings import InvalidSettings, Settings, load_settings

__all__ = [
    "apply_migrations",
    "check_database",
    "database",
    "fail",
    "validated_settings",
    "with_connection",
]

T = TypeVar("T")

_log = get_logger("loopwise.cli")


def fail(message: str, status: int = 2) -> NoReturn:
    """End the command with one line on stderr (URL passwords and tokens masked)."""
    typer.echo(f"loopwise: {Redactor().text(message)}", err=True)
    raise typer.Exit(status)


def validated_settings() -> Settings:
    try:
        settings = load_settings()
    except InvalidSettings as exc:
        fail(f"invalid setting: {exc}")
    configure_logging(settings.log_format, settings.log_level, secrets=secrets_of(settings))
    return settings


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """Yield the DSN to use: the configured URL, or an embedded PostgreSQL's."""
    if settings.database_url is not None:
        yield str(settings.database_url)
        return
    try:
        with embedded_postgres(settings.data_dir) as dsn:
            _log.info("embedded_postgres_started", data_dir=str(settings.data_dir))
            yield dsn
            _log.info("embedded_postgres_stopping")
    except EmbeddedUnavailable as exc:
        fail(str(exc))


def apply_migrations(dsn: str) -> None:
    import sqlalchemy.exc

    from loopwise.service.migrate import migrate

    try:
        migrate(dsn)
    except OSError as exc:
        fail(f"cannot reach PostgreSQL to migrate: {exc}", status=1)
    except (sqlalchemy.exc.DBAPIError, asyncpg.PostgresError) as exc:
        # A refused login, a missing database: the server's own words, on one line.
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        fail(f"PostgreSQL refused the migration: {reason}", status=1)


def check_database(dsn: str, *, within: float = 10.0) -> None:
    """End the command with one line unless PostgreSQL at ``dsn`` accepts a connection.

    Run before the server starts: otherwise every worker fails its start-up with a
    traceback each, and the listener was already open.
    """

    async def connect() -> None:
        conn = await asyncpg.connect(dsn, timeout=within)
        await conn.close()

    try:
        asyncio.run(connect())
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        parts = urlsplit(dsn)
        where = f"{parts.hostname or 'local socket'}:{parts.port or 5432}{parts.path}"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        fail(f"cannot reach PostgreSQL at {where}: {reason}", status=1)


def with_connection(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run ``work`` on one connection to the configured (or embedded) database, then close."""

    async def run(dsn: str) -> T:
        conn = await asyncpg.connect(dsn, timeout=settings.db_acquire_timeout + 3)
        try:
            return await work(conn)
        finally:
            await conn.close()

    with database(settings) as dsn:
        try:
            return asyncio.run(run(settings.direct_dsn(dsn)))  # session-level: not pooled
        except OSError as exc:
            fail(f"cannot reach PostgreSQL: {exc}", status=1)
