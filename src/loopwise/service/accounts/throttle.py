"""Login throttling: failures counted per account and client, per account, per address.

The rule, each a fixed window of ``LOOPWISE_LOGIN_FAILURE_WINDOW`` seconds (15 min):

- ``pair:<account>|<address>``: one client guessing one account's password gets 429
  after ``LOOPWISE_LOGIN_MAX_FAILURES_PER_CLIENT`` failures (5). This is the tight bound,
  and it binds only that client: the owner logging in from anywhere else is not affected.
- ``account:<account>``: every client together gets ``..._PER_ACCOUNT`` failures (100),
  then the account gets 429 everywhere until the window ends. This keeps a distributed
  guess expensive (100 guesses per 15 min per account is ~10,000 a day against a
  password the registration rules made long), and locking the owner out now takes 100
  failures from at least 20 addresses, not 5 from one.
- ``address:<address>``: one address failing across many accounts (password spraying)
  gets 429 after ``..._PER_ADDRESS`` failures (50). IPv6 clients are counted per /64,
  the block one subscriber usually holds, so rotating addresses within it does not help.

A success clears the account's and the pair's counters. Counters live in PostgreSQL, so
the limits hold across every ``serve`` instance. Behind a proxy, the client address is the
proxy's unless ``LOOPWISE_TRUSTED_PROXIES`` names it.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

import asyncpg

from loopwise.service.accounts.fixed_windows import FixedWindows
from loopwise.service.db import Connection
from loopwise.service.exceptions import TooManyRequests
from loopwise.service.settings import Settings

__all__ = ["LoginThrottle", "client_key"]

# `key IN (...)` keeps this on the primary key whatever the statistics say: during a
# credential-stuffing wave most rows have a recent window, which a range on window_start
# would scan in full.
_BLOCKED_FOR = """
SELECT extract(epoch FROM max(t.window_start) + make_interval(secs => $3) - now())
FROM unnest($1::text[], $2::int[]) AS k(key, max_failures)
JOIN login_throttle AS t ON t.key = k.key
WHERE t.window_start > now() - make_interval(secs => $3)
  AND t.failures >= k.max_failures
"""

_FAILURES = FixedWindows("login_throttle", "failures")


@dataclass(frozen=True, slots=True)
class LoginThrottle:
    """The throttle keys of one login attempt, and the limits from settings."""

    pair_key: str
    account_key: str
    address_key: str
    window: float
    max_per_client: int
    max_per_account: int
    max_per_address: int

    @classmethod
    def for_attempt(cls, settings: Settings, account: str, address: str) -> LoginThrottle:
        """The keys for ``account`` (the email's identity key) tried from ``address``."""
        client = client_key(address)
        return cls(
            pair_key=f"pair:{account}|{client}",
            account_key=f"account:{account}",
            address_key=f"address:{client}",
            window=settings.login_failure_window,
            max_per_client=settings.login_max_failures_per_client,
            max_per_account=settings.login_max_failures_per_account,
            max_per_address=settings.login_max_failures_per_address,
        )

    @property
    def _keys(self) -> list[str]:
        return [self.pair_key, self.account_key, self.address_key]

    async def check(self, conn: Connection | asyncpg.Pool) -> None:
        """Raise :class:`TooManyRequests` while any of this attempt's keys is throttled."""
        blocked_for = await conn.fetchval(
            _BLOCKED_FOR,
            self._keys,
            [self.max_per_client, self.max_per_account, self.max_per_address],
            self.window,
        )
        if blocked_for is not None and blocked_for > 0:
            raise TooManyRequests(
                "Too many failed logins; retry later.", retry_after=math.ceil(blocked_for)
            )

    async def record_failure(self, conn: Connection | asyncpg.Pool) -> None:
        await _FAILURES.count(conn, self._keys, window=self.window)

    async def clear_account(self, conn: Connection | asyncpg.Pool) -> None:
        """After a success: the account's counters go, the address's stay."""
        await _FAILURES.forget(conn, [self.pair_key, self.account_key])


def client_key(address: str) -> str:
    """The client's address as counted: IPv4 as is, IPv6 by its /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]  # "unknown", or a test client's name
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
