"""Throttling requests that send email: fixed windows per key, counted in PostgreSQL.

    await EmailThrottle(window=3600).hit(pool, {"reset:email:ada@example.com": 3,
                                                "reset:client:10.0.0.7": 20})

Each key allows ``limit`` requests per window of ``window`` seconds; the request that
goes past any of its keys' limits raises :class:`TooManyRequests` with ``Retry-After``
(the end of that key's window). The counters live in PostgreSQL, so the limits hold
across every ``serve`` instance. Counting and checking is one statement: concurrent
requests cannot both slip under a limit.

The keys never depend on whether an account exists (a password reset is keyed by the
address typed in), so a 429 says nothing about which addresses have accounts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg

from loopwise.service.db import Connection
from loopwise.service.exceptions import TooManyRequests

__all__ = ["EmailThrottle", "forget_keys"]

# Counts a request for every key (a new window where the old one ended), purges a bounded
# batch of ended windows on the way (never the rows being counted), and returns the
# seconds until the latest-ending window among the keys now past their limit.
_HIT = """
WITH purged AS (
    DELETE FROM email_throttle WHERE key IN (
        SELECT key FROM email_throttle
        WHERE window_start <= now() - make_interval(secs => $3) AND key <> ALL($1::text[])
        ORDER BY window_start LIMIT 100
        FOR UPDATE SKIP LOCKED
    )
),
counted AS (
    INSERT INTO email_throttle AS t (key, requests, window_start)
    SELECT k, 1, now() FROM unnest($1::text[]) AS k
    ON CONFLICT (key) DO UPDATE SET
        requests = CASE WHEN t.window_start > now() - make_interval(secs => $3)
                        THEN t.requests + 1 ELSE 1 END,
        window_start = CASE WHEN t.window_start > now() - make_interval(secs => $3)
                            THEN t.window_start ELSE now() END
    RETURNING t.key, t.requests, t.window_start
)
SELECT max(extract(epoch FROM c.window_start + make_interval(secs => $3) - now()))::float8
FROM counted c JOIN unnest($1::text[], $2::int[]) AS l(key, lim) ON l.key = c.key
WHERE c.requests > l.lim
"""


@dataclass(frozen=True, slots=True)
class EmailThrottle:
    """Fixed windows of ``window`` seconds; each :meth:`hit` names its keys and limits."""

    window: float

    def __post_init__(self) -> None:
        if self.window <= 0:
            raise ValueError(f"`window` must be positive, got {self.window}")

    async def hit(self, conn: Connection | asyncpg.Pool, limits: Mapping[str, int]) -> None:
        """Count one request against each key.

        Raises:
            TooManyRequests: a key went past its limit in this window.
        """
        keys = list(limits)
        blocked_for: float | None = await conn.fetchval(
            _HIT, keys, [limits[k] for k in keys], self.window
        )
        if blocked_for is not None:
            raise TooManyRequests(
                "Too many emails requested; retry later.",
                retry_after=max(1, math.ceil(blocked_for)),
            )


async def forget_keys(conn: Connection | asyncpg.Pool, keys: list[str]) -> None:
    """Delete the counters of ``keys`` (an account's, when it is deleted)."""
    await conn.execute("DELETE FROM email_throttle WHERE key = ANY($1::text[])", keys)
