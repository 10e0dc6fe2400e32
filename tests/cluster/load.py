"""Constant load through HAProxy, bounded in time and count, counting every outcome.

    async with constant_load(cluster.haproxy.url, accounts) as load:
        ...                        # restart things under it
    load.counts                    # {"200": 812, "201": 130, "503": 4, "ConnectError": 0}

Each lane is a closed loop (one request at a time) over a mix: ``GET /users/{id}``,
``POST /users/me/orders`` and ``GET /users/me/overview``. So at most ``lanes`` requests
are in flight at any moment, whatever happens to the servers. Counts, not latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import httpx

__all__ = ["Account", "Load", "constant_load", "register_accounts"]


@dataclass(frozen=True)
class Account:
    id: int
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Load:
    counts: Counter[str] = field(default_factory=Counter)
    # Orders the service answered 201 for: each must exist afterwards.
    orders: list[int] = field(default_factory=list)
    # 503 answers and whether each carried Retry-After.
    unavailable: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    _answered: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def served(self, count: int, status: str = "200") -> None:
        """Wait until ``count`` more answers with ``status`` have come back."""
        target = self.counts[status] + count
        async with self._answered:
            await self._answered.wait_for(lambda: self.counts[status] >= target)

    @property
    def failed(self) -> int:
        """Requests that got neither a 2xx nor an answer the client is told to retry."""
        return sum(n for outcome, n in self.counts.items() if not outcome.startswith("2"))

    def summary(self) -> str:
        return f"requests={self.requests} " + " ".join(
            f"{outcome}={n}" for outcome, n in sorted(self.counts.items())
        )


async def register_accounts(base_url: str, count: int, prefix: str) -> list[Account]:
    """Register and log in ``count`` users through ``base_url``."""
    accounts = []
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for n in range(count):
            email = f"{prefix}{n}@example.com"
            password = "correct horse battery"
            body = {"email": email, "password": password, "display_name": "Load"}
            registered = await client.post("/register", json=body)
            assert registered.status_code == 201, registered.text
            login = await client.post("/login", json={"email": email, "password": password})
            assert login.status_code == 200, login.text
            accounts.append(Account(registered.json()["id"], email, login.json()["access_token"]))
    return accounts


_ORDER = {"items": [{"sku": "LOAD-1", "quantity": 1, "unit_price_cents": 100}]}


@contextlib.asynccontextmanager
async def constant_load(
    base_url: str,
    accounts: Sequence[Account],
    *,
    lanes: int = 8,
    max_requests: int = 200_000,
    max_seconds: float = 240,
) -> AsyncIterator[Load]:
    """Run the load while the block runs; stop at its end, or at a bound (time, count)."""
    load = Load()
    stop = asyncio.Event()
    started = asyncio.Event()
    # One connection per lane, kept alive, as a client behind a balancer would.
    limits = httpx.Limits(max_connections=lanes, max_keepalive_connections=lanes)

    async def lane(client: httpx.AsyncClient, number: int) -> None:
        for n in itertools.count(number):
            if stop.is_set() or load.requests >= max_requests:
                return
            account = accounts[n % len(accounts)]
            kind = n % 4
            load.requests += 1
            try:
                if kind == 0 or kind == 3:
                    response = await client.get(f"/users/{account.id}", headers=account.headers)
                elif kind == 1:
                    response = await client.post(
                        "/users/me/orders", json=_ORDER, headers=account.headers
                    )
                    if response.status_code == 201:
                        load.orders.append(response.json()["id"])
                else:
                    response = await client.get("/users/me/overview", headers=account.headers)
            except httpx.TransportError as exc:
                load.counts[type(exc).__name__] += 1
                continue
            load.counts[str(response.status_code)] += 1
            async with load._answered:
                load._answered.notify_all()
            if response.status_code == 503:
                has = "retry-after" in response.headers
                load.unavailable["with Retry-After" if has else "without Retry-After"] += 1
            if load.requests >= 4 * lanes:
                started.set()

    async with (
        httpx.AsyncClient(base_url=base_url, limits=limits, timeout=20) as client,
        asyncio.TaskGroup() as tg,
    ):
        tasks = [tg.create_task(lane(client, n)) for n in range(lanes)]
        try:
            async with asyncio.timeout(60):
                await started.wait()  # the load is flowing before the test acts
            async with asyncio.timeout(max_seconds):
                yield load
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
