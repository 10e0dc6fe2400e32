"""Fixed-window counters in PostgreSQL: the one mechanism under the login and email throttles.

    failures = FixedWindows("login_throttle", "failures")
    rows = await failures.count(conn, ["account:ada", "address:10.0.0.7"], window=900)
    rows[0]["count"], rows[0]["ends_in"]     # this key's count, seconds left in its window
    await failures.forget(conn, ["account:ada"])

A table of ``(key text PRIMARY KEY, <count> int, window_start timestamptz)`` rows, one per
key. Counting is one statement: concurrent requests cannot both slip under a limit, and the
limits hold across every ``serve`` instance.
"""

from __future__ import annotations

import asyncpg

from loopwise.service.db import Connection

__all__ = ["FixedWindows"]

# Counts one for every key (a new window where the old one ended) and purges a bounded
# batch of ended windows (never the rows being counted) on the way, so the table stays as
# large as the recent traffic without a sweeper. `now()` is the transaction's start, so
# `ends_in` is measured from the same instant the windows were compared at.
_COUNT = """
WITH purged AS (
    DELETE FROM {table} WHERE key IN (
        SELECT key FROM {table}
        WHERE window_start <= now() - make_interval(secs => $2) AND key <> ALL($1::text[])
        ORDER BY window_start LIMIT 100
        FOR UPDATE SKIP LOCKED
    )
)
INSERT INTO {table} AS t (key, {count}, window_start)
SELECT k, 1, now() FROM unnest($1::text[]) AS k
ON CONFLICT (key) DO UPDATE SET
    {count} = CASE WHEN t.window_start > now() - make_interval(secs => $2)
                   THEN t.{count} + 1 ELSE 1 END,
    window_start = CASE WHEN t.window_start > now() - make_interval(secs => $2)
                        THEN t.window_start ELSE now() END
RETURNING t.key, t.{count} AS count,
    extract(epoch FROM t.window_start + make_interval(secs => $2) - now())::float8 AS ends_in
"""


class FixedWindows:
    """The counters of one table, whose count column is ``count_column``."""

    __slots__ = ("_count", "_forget")

    def __init__(self, table: str, count_column: str) -> None:
        self._count = _COUNT.format(table=table, count=count_column)
        self._forget = f"DELETE FROM {table} WHERE key = ANY($1::text[])"  # noqa: S608 - constants

    async def count(
        self, conn: Connection | asyncpg.Pool, keys: list[str], *, window: float
    ) -> list[asyncpg.Record]:
        """Count one for each key in windows of ``window`` seconds.

        Returns:
            A row per key: ``key``, ``count`` (this window's, this one included) and
            ``ends_in`` (seconds until this window ends).
        """
        return await conn.fetch(self._count, keys, window)

    async def forget(self, conn: Connection | asyncpg.Pool, keys: list[str]) -> None:
        """Delete the counters of ``keys``: their next request starts a new window."""
        await conn.execute(self._forget, keys)
