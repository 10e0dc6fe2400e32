"""Small helpers for tests that manage PostgreSQL databases."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["database_name", "with_database"]


def with_database(dsn: str, name: str) -> str:
    """The same server and credentials as ``dsn``, another database."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


def database_name(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")
