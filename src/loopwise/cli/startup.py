"""How every ``loopwise`` command starts: valid settings, then a database to use.

Every subcommand validates settings first; a bad value ends it with one line naming the
setting and the rule, and exit status 2, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import NoReturn, TypeVar

import asyncpg
import typer

from loopwise.service.db import EmbeddedUnavailable, embedded_postgres
from loopwise.service.logs import configure_logging, get_logger
from loopwise.service.settings import InvalidSettings, Settings, load_settings

__all__ = ["apply_migrations", "database", "fail", "validated_settings", "with_connection"]

T = TypeVar("T")

_log = get_logger("loopwise.cli")


def fail(message: str, status: int = 2) -> NoReturn:
    typer.echo(f"loopwise: {message}", err=True)
    raise typer.Exit(status)


def validated_settings() -> Settings:
    try:
        settings = load_settings()
    except InvalidSettings as exc:
        fail(f"invalid setting: {exc}")
    configure_logging(settings.log_format, settings.log_level)
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
    from loopwise.service.migrate import migrate

    try:
        migrate(dsn)
    except OSError as exc:
        fail(f"cannot reach PostgreSQL to migrate: {exc}", status=1)


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
