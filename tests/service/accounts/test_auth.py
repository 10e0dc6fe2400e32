"""Logging in and out, bearer tokens, and login throttling."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from loopwise.service.app import create_app
from loopwise.service.identity.sessions import hash_token
from loopwise.service.settings import Settings
from tests.service.accounts.conftest import Account, announced, cache_stats, listening, login

PROTECTED = [
    ("GET", "/users/me"),
    ("PATCH", "/users/me"),
    ("GET", "/users/1"),
    ("POST", "/logout"),
    ("POST", "/users/me/orders"),
    ("GET", "/users/me/orders"),
    ("GET", "/users/me/orders/1"),
    ("GET", "/users/me/preferences"),
    ("PUT", "/users/me/preferences"),
    ("GET", "/users/me/overview"),
]


async def test_login_returns_a_bearer_token(client: httpx.AsyncClient, alice: Account) -> None:
    """200 with an opaque token, its type and its expiry; only its hash is stored."""
    response = await client.post(
        "/login", json={"email": alice.email.upper(), "password": alice.password}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert datetime.fromisoformat(body["expires_at"]) > datetime.fromisoformat(
        "2000-01-01T00:00:00+00:00"
    )
    assert len(body["access_token"]) == 43


async def test_wrong_password_and_unknown_email_answer_alike(
    client: httpx.AsyncClient, alice: Account
) -> None:
    """A wrong password and an unknown email get the same 401 body."""
    wrong = await client.post("/login", json={"email": alice.email, "password": "nope nope"})
    unknown = await client.post(
        "/login", json={"email": "nobody@example.com", "password": "nope nope"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.headers["www-authenticate"] == "Bearer"


async def test_only_token_hashes_are_stored(
    client: httpx.AsyncClient, alice: Account, database_url: str
) -> None:
    """The sessions table holds SHA-256 digests, never the token itself."""
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetch("SELECT token_hash FROM sessions")
    finally:
        await conn.close()
    assert [row[0] for row in stored] == [hash_token(alice.token)]


async def test_logout_revokes_the_token(client: httpx.AsyncClient, alice: Account) -> None:
    """After logout the token is refused; a second logout with it is 401."""
    assert (await client.post("/logout", headers=alice.headers)).status_code == 204
    assert (await client.get("/users/me", headers=alice.headers)).status_code == 401
    assert (await client.post("/logout", headers=alice.headers)).status_code == 401


async def test_logout_leaves_other_sessions(client: httpx.AsyncClient, alice: Account) -> None:
    """Logging out one session keeps the user's others."""
    other = await login(client, alice.email, alice.password)
    await client.post("/logout", headers=alice.headers)
    response = await client.get("/users/me", headers={"Authorization": f"Bearer {other}"})
    assert response.status_code == 200


async def test_expired_token_is_refused(
    client: httpx.AsyncClient, alice: Account, database_url: str
) -> None:
    """A session past its expiry is 401."""
    await listening(client)
    assert (await client.get("/users/me", headers=alice.headers)).status_code == 200
    before = (await cache_stats(client))["invalidations_total"]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE sessions SET expires_at = now() - interval '1 second'")
    finally:
        await conn.close()
    await announced(client, before)  # the app kept the session in memory until told
    assert (await client.get("/users/me", headers=alice.headers)).status_code == 401


BAD_AUTHORIZATIONS: list[bytes | None] = [
    None,
    b"",
    b"Bearer",
    b"Bearer ",
    b"Basic dXNlcjpwYXNz",
    b"Bearer ' OR '1'='1",
    b"Bearer " + b"A" * 43,
    ("Bearer " + "\U0001f680" * 43).encode(),
    b"Bearer " + b"x" * 10_000,
]


async def test_protected_endpoints_refuse_bad_tokens(client: httpx.AsyncClient) -> None:
    """Every protected endpoint answers 401 problem+json to a missing or bogus token."""
    for authorization in BAD_AUTHORIZATIONS:
        headers = {} if authorization is None else {b"Authorization": authorization}
        for method, path in PROTECTED:
            response = await client.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (method, path)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["www-authenticate"] == "Bearer"


async def test_protected_endpoints_refuse_revoked_tokens(
    client: httpx.AsyncClient, alice: Account
) -> None:
    """Every protected endpoint refuses a token once it is logged out."""
    await client.post("/logout", headers=alice.headers)
    for method, path in PROTECTED:
        response = await client.request(method, path, headers=alice.headers, json={})
        assert response.status_code == 401, (method, path)


BAD_LOGINS = [
    {"email": "a@example.com"},
    {"password": "x"},
    {"email": "a@example.com", "password": ""},
    {"email": "a@example.com", "password": 123},
    {"email": 5, "password": "secret secret"},
    {"email": "a@example.com", "password": "x" * 129},
    {"email": "a@example.com", "password": "secret secret", "remember": True},
]


async def test_login_field_errors(client: httpx.AsyncClient) -> None:
    """Missing, mistyped, oversized and extra login fields are 422."""
    for body in BAD_LOGINS:
        assert (await client.post("/login", json=body)).status_code == 422


async def test_failures_per_account_are_throttled(
    client: httpx.AsyncClient, alice: Account, settings: Settings
) -> None:
    """After the allowed failures the account gets 429 with Retry-After, right password too."""
    for _ in range(settings.login_max_failures_per_client):
        wrong = await client.post("/login", json={"email": alice.email, "password": "bad guess"})
        assert wrong.status_code == 401
    throttled = await client.post("/login", json={"email": alice.email, "password": alice.password})
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["retry-after"]) <= settings.login_failure_window
    assert throttled.headers["content-type"] == "application/problem+json"


async def test_unknown_emails_are_throttled_alike(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    """Failures for an email without an account are throttled like any other."""
    body = {"email": "ghost@example.com", "password": "bad guess"}
    for _ in range(settings.login_max_failures_per_client):
        assert (await client.post("/login", json=body)).status_code == 401
    assert (await client.post("/login", json=body)).status_code == 429


async def test_success_clears_the_account_counter(
    client: httpx.AsyncClient, alice: Account, settings: Settings
) -> None:
    """A successful login resets the account's failures."""
    for _ in range(settings.login_max_failures_per_client - 1):
        await client.post("/login", json={"email": alice.email, "password": "bad guess"})
    await login(client, alice.email, alice.password)
    for _ in range(settings.login_max_failures_per_client - 1):
        wrong = await client.post("/login", json={"email": alice.email, "password": "bad guess"})
        assert wrong.status_code == 401


@pytest.fixture
async def strict_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app that allows 3 failures per address and a 1-hour window."""
    strict = settings.model_copy(
        update={"login_max_failures_per_address": 3, "login_failure_window": 3600}
    )
    async with LifespanManager(create_app(strict)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


async def test_failures_per_address_are_throttled(strict_client: httpx.AsyncClient) -> None:
    """One address failing across many accounts is throttled as a whole."""
    for n in range(3):
        body = {"email": f"spray{n}@example.com", "password": "bad guess"}
        assert (await strict_client.post("/login", json=body)).status_code == 401
    body = {"email": "fresh@example.com", "password": "bad guess"}
    throttled = await strict_client.post("/login", json=body)
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) > 3000


async def test_throttle_is_shared_across_instances(
    settings: Settings, client: httpx.AsyncClient, alice: Account
) -> None:
    """Failures counted by one app instance throttle logins on another (PostgreSQL state)."""
    for _ in range(settings.login_max_failures_per_client):
        await client.post("/login", json={"email": alice.email, "password": "bad guess"})
    async with LifespanManager(create_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as second:
            response = await second.post(
                "/login", json={"email": alice.email, "password": alice.password}
            )
    assert response.status_code == 429


async def test_unicode_credentials(client: httpx.AsyncClient) -> None:
    """Non-ASCII passwords and internationalised email domains register and log in."""
    body = {"email": "zoe@bücher.example", "password": "🔑 pässwörd 鍵", "display_name": "Zoë"}
    assert (await client.post("/register", json=body)).status_code == 201
    # ASCII letters fold, the domain compares as IDNA (accounts/mailboxes.py).
    await login(client, "ZOE@BÜCHER.EXAMPLE", body["password"])
    await login(client, "zoe@xn--bcher-kva.example", body["password"])


def test_hash_threads_default_to_cores_per_worker(settings: Settings) -> None:
    """Unset, the argon2 threads split the cores among the server's worker processes."""
    default = settings.model_copy(update={"password_hash_workers": None, "workers": 64})
    assert default.password_hash_threads == 1
    assert settings.password_hash_threads == 2
