"""Fixed-window counters: counted per key in one statement, restarted and purged when ended."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from loopwise.service.accounts.fixed_windows import FixedWindows

WINDOWS = FixedWindows("email_throttle", "requests")
HOUR = 3600.0


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def _end_windows(conn: asyncpg.Connection, *keys: str) -> None:
    await conn.execute(
        "UPDATE email_throttle SET window_start = now() - interval '2 hours'"
        " WHERE key = ANY($1::text[])",
        list(keys),
    )


async def test_each_key_counts_in_its_own_window(conn: asyncpg.Connection) -> None:
    """Every key named counts one; a key's count and its window's end come back."""
    await WINDOWS.count(conn, ["a"], window=HOUR)
    rows = await WINDOWS.count(conn, ["a", "b"], window=HOUR)
    counted = {row["key"]: row["count"] for row in rows}
    assert counted == {"a": 2, "b": 1}
    assert all(0 < row["ends_in"] <= HOUR for row in rows)


async def test_an_ended_window_starts_again_and_old_ones_are_purged(
    conn: asyncpg.Connection,
) -> None:
    """Counting after a window ended starts at one; other ended windows are deleted."""
    await WINDOWS.count(conn, ["a", "stale"], window=HOUR)
    await WINDOWS.count(conn, ["a"], window=HOUR)
    await _end_windows(conn, "a", "stale")
    (row,) = await WINDOWS.count(conn, ["a"], window=HOUR)
    assert row["count"] == 1
    assert row["ends_in"] == HOUR  # the window starts now, in this statement's transaction
    keys = await conn.fetch("SELECT key FROM email_throttle")
    assert [k["key"] for k in keys] == ["a"]


async def test_forgotten_keys_start_afresh(conn: asyncpg.Connection) -> None:
    """forget() deletes the named counters and only those."""
    await WINDOWS.count(conn, ["a", "b"], window=HOUR)
    await WINDOWS.forget(conn, ["a"])
    rows = await WINDOWS.count(conn, ["a", "b"], window=HOUR)
    assert {row["key"]: row["count"] for row in rows} == {"a": 1, "b": 2}
