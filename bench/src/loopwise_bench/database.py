"""A fresh, migrated database for one bench run, on the embedded or a given PostgreSQL.

    with bench_database(None, Path(".loopwise")) as dsn:   # embedded (pgserver)
    with bench_database("postgresql://postgres@127.0.0.1/postgres", ...) as dsn:

The run gets a database of its own (``loopwise_bench_<random>``), created from nothing,
migrated with the service's own migrations, and dropped at the end: a bench never
writes into a database someone uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from loopwise.service.db import embedded_postgres
from loopwise.service.migrate import migrate

__all__ = ["bench_database"]


def _with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def _server(admin_url: str | None, data_dir: Path) -> Iterator[str]:
    if admin_url is not None:
        yield admin_url
        return
    with embedded_postgres(data_dir / "bench", database="postgres") as dsn:
        yield dsn


@contextlib.contextmanager
def bench_database(admin_url: str | None, data_dir: Path) -> Iterator[str]:
    """Yield the DSN of a new migrated database; drop it afterwards.

    Args:
        admin_url: a PostgreSQL URL whose role may create databases; ``None`` starts the
            embedded PostgreSQL in ``data_dir / "bench"``.
        data_dir: where the embedded server keeps its files between runs.
    """
    with _server(admin_url, data_dir) as admin:
        name = f"loopwise_bench_{uuid.uuid4().hex[:10]}"
        asyncio.run(_admin(admin, f'CREATE DATABASE "{name}"'))
        try:
            dsn = _with_database(admin, name)
            migrate(dsn)
            yield dsn
        finally:
            asyncio.run(_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
