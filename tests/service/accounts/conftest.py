"""Accounts test helpers: users registered and logged in through the real API."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest

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


MakeAccount = Callable[..., Awaitable[Account]]


@pytest.fixture
def make_account(client: httpx.AsyncClient) -> MakeAccount:
    """Register a fresh user and log in; returns its id, credentials and token."""
    numbers = itertools.count(1)

    async def make(email: str | None = None, password: str = PASSWORD) -> Account:
        email = email or f"user{next(numbers)}@example.com"
        registered = await client.post(
            "/register", json={"email": email, "password": password, "display_name": "Ada"}
        )
        assert registered.status_code == 201, registered.text
        token = await login(client, email, password)
        return Account(registered.json()["id"], email, password, token)

    return make


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
