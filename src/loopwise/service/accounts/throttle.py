"""Login throttling: failures counted per account and per client address, in PostgreSQL.

Each key (``account:<email>``, ``address:<ip>``) has a fixed window of
``login_failure_window`` seconds; once its failures reach the limit, logins for that key
get 429 with ``Retry-After`` until the window ends. The counters live in PostgreSQL, not
in process memory, so the limit holds across every ``serve`` instance; a success clears
the account's counter.

Trade-off: a per-account limit lets someone lock a victim out for one window by failing
on purpose; the window is short and the per-address limit is higher, which is the usual
balance. Behind a proxy the client address is the proxy's unless the server is told to
trust ``X-Forwarded-For`` (granian/uvicorn proxy-header settings), so set that up there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import asyncpg

from loopwise.service.db import Connection
from loopwise.service.exceptions import TooManyRequests
from loopwise.service.settings import Settings

__all__ = ["LoginThrottle"]

# `key IN (...)` keeps this on the primary key whatever the statistics say: during a
# credential-stuffing wave most rows have a recent window, which a range on window_start
# would scan in full.
_BLOCKED_FOR = """
SELECT extract(epoch FROM max(window_start) + make_interval(secs => $3) - now())
FROM login_throttle
WHERE key IN ($1, $2)
  AND window_start > now() - make_interval(secs => $3)
  AND failures >= CASE WHEN key = $1 THEN $4::int ELSE $5::int END
"""

# Counts a failure for each key, starting a new window where the old one ended, and
# purges a bounded batch of ended windows (never the rows being counted) on the way, so
# the table stays as large as the recent failures without a sweeper.
_RECORD_FAILURE = """
WITH purged AS (
    DELETE FROM login_throttle WHERE key IN (
        SELECT key FROM login_throttle
        WHERE window_start <= now() - make_interval(secs => $2) AND key <> ALL($1::text[])
        ORDER BY window_start LIMIT 100
        FOR UPDATE SKIP LOCKED
    )
)
INSERT INTO login_throttle AS t (key, failures, window_start)
SELECT k, 1, now() FROM unnest($1::text[]) AS k
ON CONFLICT (key) DO UPDATE SET
    failures = CASE WHEN t.window_start > now() - make_interval(secs => $2)
                    THEN t.failures + 1 ELSE 1 END,
    window_start = CASE WHEN t.window_start > now() - make_interval(secs => $2)
                        THEN t.window_start ELSE now() END
"""


@dataclass(frozen=True, slots=True)
class LoginThrottle:
    """The throttle keys of one login attempt, and the limits from settings."""

    account_key: str
    address_key: str
    window: float
    max_per_account: int
    max_per_address: int

    @classmethod
    def for_attempt(cls, settings: Settings, email: str, address: str) -> LoginThrottle:
        return cls(
            account_key=f"account:{email.lower()}",
            address_key=f"address:{address}",
            window=settings.login_failure_window,
            max_per_account=settings.login_max_failures_per_account,
            max_per_address=settings.login_max_failures_per_address,
        )

    async def check(self, conn: Connection | asyncpg.Pool) -> None:
        """Raise :class:`TooManyRequests` while this account or address is throttled."""
        blocked_for = await conn.fetchval(
            _BLOCKED_FOR,
            self.account_key,
            self.address_key,
            self.window,
            self.max_per_account,
            self.max_per_address,
        )
        if blocked_for is not None and blocked_for > 0:
            raise TooManyRequests(
                "Too many failed logins; retry later.", retry_after=math.ceil(blocked_for)
            )

    async def record_failure(self, conn: Connection | asyncpg.Pool) -> None:
        await conn.execute(_RECORD_FAILURE, [self.account_key, self.address_key], self.window)

    async def clear_account(self, conn: Connection | asyncpg.Pool) -> None:
        await conn.execute("DELETE FROM login_throttle WHERE key = $1", self.account_key)
