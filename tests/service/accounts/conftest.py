"""Accounts test helpers: users registered and logged in through the real API."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class Account:
    id: int
    email: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def overwriting(self) -> dict[str, str]:
        """Headers of a whole-resource write that overwrites whatever is there."""
        return {**self.headers, "If-Match": "*"}


MakeAccount = Callable[..., Awaitable[Account]]


@pytest.fixture
def make_account(client: httpx.AsyncClient, database_url: str) -> MakeAccount:
    """Register a fresh user and log in; returns its id, credentials and token.

    The address is marked verified in SQL unless ``verified=False``: the link's own path
    is tested in ``test_verification.py``; elsewhere an unverified account is in the way.
    """
    numbers = itertools.count(1)

    async def make(
        email: str | None = None, password: str = PASSWORD, *, verified: bool = True
    ) -> Account:
        email = email or f"user{next(numbers)}@example.com"
        registered = await client.post(
            "/register", json={"email": email, "password": password, "display_name": "Ada"}
        )
        assert registered.status_code == 201, registered.text
        if verified:
            await mark_verified(database_url, registered.json()["id"])
        token = await login(client, email, password)
        return Account(registered.json()["id"], email, password, token)

    return make


async def mark_verified(database_url: str, user_id: int) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE users SET email_verified_at = now() WHERE id = $1", user_id)
    finally:
        await conn.close()


async def login(client: httpx.AsyncClient, email: str, password: str) -> str:
    response = await client.post("/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


@pytest.fixture
async def alice(make_account: MakeAccount) -> Account:
    return await make_account("alice@example.com")


@pytest.fixture
async def bob(make_account: MakeAccount) -> Account:
    return await make_account("bob@example.com")


async def cache_stats(client: httpx.AsyncClient, cache: str = "session") -> dict[str, float]:
    """A cache's figures as /metrics exports them (names without the prefix)."""
    text = (await client.get("/metrics")).text
    prefix = f"loopwise_{cache}_cache_"
    return {
        sample.name.removeprefix(prefix): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(prefix) and not sample.name.endswith("_created")
    }


async def until(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Wait for ``check`` to hold (an announcement crossing PostgreSQL), up to ``within``."""
    async with asyncio.timeout(within):
        # The event happens in PostgreSQL and another instance: read it where it shows.
        while not await check():  # noqa: ASYNC110 - no Event spans the two processes
            await asyncio.sleep(0.01)


async def listening(client: httpx.AsyncClient) -> None:
    async def check() -> bool:
        return (await cache_stats(client))["listening"] == 1

    await until(check)


async def announced(client: httpx.AsyncClient, after: float) -> None:
    """Wait until ``client``'s process has applied an announcement made after ``after``."""

    async def check() -> bool:
        return (await cache_stats(client))["invalidations_total"] > after

    await until(check)
