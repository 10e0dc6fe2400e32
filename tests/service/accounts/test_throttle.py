"""The login throttle's rule: a stranger cannot lock the owner out; guessing stays expensive."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from loopwise.service.accounts.throttle import client_key
from loopwise.service.app import create_app
from loopwise.service.settings import Settings

PASSWORD = "correct horse battery"
WRONG = {"email": "owner@example.com", "password": "bad guess"}
RIGHT = {"email": "owner@example.com", "password": PASSWORD}


@asynccontextmanager
async def _app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with LifespanManager(create_app(settings)) as manager:
        app: FastAPI = manager.app  # type: ignore[assignment]  # wraps the same app
        yield app


@asynccontextmanager
async def _client_at(app: FastAPI, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose requests come from ``address``, as the server sees it."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


async def test_a_stranger_cannot_lock_the_owner_out(settings: Settings) -> None:
    """Five failures from one address throttle that address only; the owner still logs in."""
    async with _app(settings) as app:
        async with _client_at(app, "198.51.100.7") as owner:
            body = {**RIGHT, "display_name": "O"}
            assert (await owner.post("/register", json=body)).status_code == 201
        async with _client_at(app, "203.0.113.66") as attacker:
            for _ in range(settings.login_max_failures_per_client):
                assert (await attacker.post("/login", json=WRONG)).status_code == 401
            # The attacker is throttled, even with the right password...
            assert (await attacker.post("/login", json=RIGHT)).status_code == 429
        # ...the owner, from their own address, is not.
        async with _client_at(app, "198.51.100.7") as owner:
            assert (await owner.post("/login", json=RIGHT)).status_code == 200


async def test_guessing_from_many_addresses_is_still_bounded(settings: Settings) -> None:
    """Failures from many addresses add up per account: past that bound, 429 for everyone."""
    strict = settings.model_copy(
        update={"login_max_failures_per_client": 3, "login_max_failures_per_account": 10}
    )
    async with _app(strict) as app:
        async with _client_at(app, "198.51.100.7") as owner:
            assert (
                await owner.post("/register", json={**RIGHT, "display_name": "O"})
            ).status_code == 201
        statuses = []
        for n in range(4):  # 4 addresses x 3 failures: 12 > 10 for the account
            async with _client_at(app, f"203.0.113.{n + 1}") as guesser:
                statuses += [
                    (await guesser.post("/login", json=WRONG)).status_code for _ in range(3)
                ]
        assert statuses.count(401) == 10
        assert statuses[10:] == [429, 429]
        async with _client_at(app, "192.0.2.200") as fresh:
            refused = await fresh.post("/login", json=RIGHT)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1


async def test_one_ipv6_slash_64_is_one_client(settings: Settings) -> None:
    """Addresses within one IPv6 /64 share a counter: rotating them buys no extra guesses."""
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    async with _app(settings) as app:
        for n in range(settings.login_max_failures_per_client):
            async with _client_at(app, f"2001:db8:1:2::{n + 1}") as guesser:
                assert (await guesser.post("/login", json=WRONG)).status_code == 401
        async with _client_at(app, "2001:db8:1:2::99") as guesser:
            assert (await guesser.post("/login", json=WRONG)).status_code == 429
