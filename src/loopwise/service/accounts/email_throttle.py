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

from loopwise.service.accounts.fixed_windows import FixedWindows
from loopwise.service.db import Connection
from loopwise.service.exceptions import TooManyRequests

__all__ = ["EmailThrottle", "forget_keys"]

_REQUESTS = FixedWindows("email_throttle", "requests")


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
        rows = await _REQUESTS.count(conn, list(limits), window=self.window)
        over = [row["ends_in"] for row in rows if row["count"] > limits[row["key"]]]
        if over:
            raise TooManyRequests(
                "Too many emails requested; retry later.",
                retry_after=max(1, math.ceil(max(over))),
            )


async def forget_keys(conn: Connection | asyncpg.Pool, keys: list[str]) -> None:
    """Delete the counters of ``keys`` (an account's, when it is deleted)."""
    await _REQUESTS.forget(conn, keys)
