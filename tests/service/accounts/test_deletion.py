"""Deleting an account: what is erased and kept (checked in SQL), sessions, in-flight requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from loopwise.service.settings import Settings
from tests.service.accounts.conftest import (
    PASSWORD,
    announced,
    cache_stats,
    listening,
    login,
    mark_verified,
    until,
)
from tests.service.accounts.mail import instance, mailing, next_mail, parts, sql
from tests.service.jobs.smtp import SmtpServer, smtp_server

ORDER = {"items": [{"sku": "tea", "quantity": 2, "unit_price_cents": 250}]}


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServer]:
    async with smtp_server() as server:
        yield server


async def _account(
    client: httpx.AsyncClient, database_url: str, email: str
) -> tuple[int, dict[str, str]]:
    """A verified account with preferences and an order; its id and auth header."""
    body = {"email": email, "password": PASSWORD, "display_name": "Ada"}
    registered = await client.post("/register", json=body)
    assert registered.status_code == 201
    user_id: int = registered.json()["id"]
    await mark_verified(database_url, user_id)
    auth = {"Authorization": f"Bearer {await login(client, email, PASSWORD)}"}
    assert (await client.post("/users/me/orders", headers=auth, json=ORDER)).status_code == 201
    prefs = {"timezone": "Europe/Paris"}
    assert (
        await client.put("/users/me/preferences", headers={**auth, "If-Match": "*"}, json=prefs)
    ).status_code == 200
    return user_id, auth


async def _delete(client: httpx.AsyncClient, auth: dict[str, str], password: str) -> int:
    response = await client.request(
        "DELETE", "/users/me", headers=auth, json={"password": password}
    )
    return response.status_code


async def test_deletion_erases_personal_data_and_keeps_orders_anonymised(
    settings: Settings, database_url: str
) -> None:
    """User, sessions, preferences, tokens, queued jobs and counters go; orders stay, unlinked."""
    quiet = settings.model_copy(update={"jobs_in_process": False})  # jobs stay queued
    async with instance(quiet) as client:
        user_id, auth = await _account(client, database_url, "ada@example.com")
        other_id, _ = await _account(client, database_url, "bob@example.com")
        await sql(database_url, "UPDATE users SET email_verified_at = NULL WHERE id = $1", user_id)

        async def unverified() -> bool:  # the session cache hears of the change
            return (await client.get("/users/me", headers=auth)).json()["email_verified"] is False

        await until(unverified)
        assert (await client.post("/verify-email/resend", headers=auth)).status_code == 202
        assert (
            await client.post("/password-reset", json={"email": "ADA@example.com"})
        ).status_code == 202
        await client.post("/login", json={"email": "ada@example.com", "password": "wrong!"})
        assert await _delete(client, auth, "not my password") == 403
        assert (await client.get("/users/me", headers=auth)).status_code == 200
        assert await _delete(client, auth, PASSWORD) == 204
        assert (await client.get("/users/me", headers=auth)).status_code == 401

    async def count(query: str, *args: object) -> int:
        rows = await sql(database_url, query, *args)
        return int(rows[0][0])

    assert await count("SELECT count(*) FROM users WHERE id = $1", user_id) == 0
    for table in ("sessions", "preferences", "account_tokens"):
        query = f"SELECT count(*) FROM {table} WHERE user_id = $1"  # noqa: S608 - constants
        assert await count(query, user_id) == 0
    assert await count("SELECT count(*) FROM login_throttle WHERE key LIKE '%ada@%'") == 0
    assert await count("SELECT count(*) FROM email_throttle WHERE key LIKE '%ada@%'") == 0
    assert (
        await count("SELECT count(*) FROM email_throttle WHERE key = $1", f"verify:user:{user_id}")
        == 0
    )
    # Kept, unlinked: one anonymised order (with its items) and the other user's.
    orders = await sql(database_url, "SELECT user_id, total_cents FROM orders ORDER BY id")
    assert [(o["user_id"], o["total_cents"]) for o in orders] == [(None, 500), (other_id, 500)]
    assert await count("SELECT count(*) FROM order_items") == 2
    # Every job about the account or its address is gone; the confirmation is queued.
    jobs = await sql(
        database_url, "SELECT kind, payload ->> 'email' AS email FROM jobs ORDER BY id"
    )
    assert [(j["kind"], j["email"]) for j in jobs] == [
        ("email.welcome", "bob@example.com"),
        ("email.account_deleted", "ada@example.com"),
    ]


async def test_deletion_confirms_by_email_and_ends_sessions_everywhere(
    settings: Settings, smtp: SmtpServer, database_url: str
) -> None:
    """The confirmation arrives, and a second instance that cached the session refuses it."""
    mail = mailing(settings, smtp)
    async with instance(mail) as client, instance(mail, host="other") as other:
        _, auth = await _account(client, database_url, "cy@example.com")
        await next_mail(smtp, "cy@example.com")  # the welcome
        await listening(other)
        assert (await other.get("/users/me", headers=auth)).status_code == 200
        before = (await cache_stats(other))["invalidations_total"]
        assert await _delete(client, auth, PASSWORD) == 204
        await announced(other, before)
        assert (await other.get("/users/me", headers=auth)).status_code == 401
        confirmation = await next_mail(smtp, "cy@example.com")
    assert confirmation["Subject"] == "Your loopwise account has been deleted"
    assert set(parts(confirmation)) == {"text/plain", "text/html"}
    assert await _login_fails(settings, "cy@example.com")


async def _login_fails(settings: Settings, email: str) -> bool:
    async with instance(settings.model_copy(update={"jobs_in_process": False})) as client:
        response = await client.post("/login", json={"email": email, "password": PASSWORD})
        return response.status_code == 401


async def test_requests_in_flight_get_401_never_500(settings: Settings, database_url: str) -> None:
    """Writes and reads racing the deletion answer 2xx or 401; no row is left half-linked."""
    # Generous deadlines: on a saturated machine the overview's 1 s budget or a pool wait
    # would answer 503 (overload shedding), which is not what this test is about.
    patient = settings.model_copy(
        update={"jobs_in_process": False, "overview_deadline": 60, "db_acquire_timeout": 60}
    )
    async with instance(patient) as client:
        user_id, auth = await _account(client, database_url, "dee@example.com")

        async def one(n: int) -> int:
            kind = n % 5
            if kind == 0:
                r = await client.post("/users/me/orders", headers=auth, json=ORDER)
            elif kind == 1:
                r = await client.put(
                    "/users/me/preferences",
                    headers={**auth, "If-Match": "*"},
                    json={"timezone": "UTC"},
                )
            elif kind == 2:
                r = await client.patch("/users/me", headers=auth, json={"display_name": f"D{n}"})
            elif kind == 3:
                r = await client.get("/users/me/overview", headers=auth)
            else:
                r = await client.get(f"/users/{user_id}", headers=auth)
            return r.status_code

        async def racing() -> list[int]:
            return list(await asyncio.gather(*(one(n) for n in range(30))))

        statuses, deleted = await asyncio.gather(racing(), _delete(client, auth, PASSWORD))
        after = await asyncio.gather(*(one(n) for n in range(5)))

    assert deleted == 204
    assert set(statuses) <= {200, 201, 401}, statuses
    assert set(after) == {401}
    for table in ("users", "sessions", "preferences"):
        column = "id" if table == "users" else "user_id"
        query = f"SELECT count(*) FROM {table} WHERE {column} = $1"  # noqa: S608 - constants
        rows = await sql(database_url, query, user_id)
        assert rows[0][0] == 0, table
    # Orders that won the race were anonymised with the rest.
    owners = await sql(database_url, "SELECT DISTINCT user_id FROM orders")
    assert [o["user_id"] for o in owners] == [None]


async def test_concurrent_deletions_one_wins(settings: Settings, database_url: str) -> None:
    """Two deletions at once: one 204, the other 401; one confirmation job."""
    async with instance(settings.model_copy(update={"jobs_in_process": False})) as client:
        _, auth = await _account(client, database_url, "eve@example.com")
        results = await asyncio.gather(*(_delete(client, auth, PASSWORD) for _ in range(2)))
    assert sorted(results) == [204, 401]
    jobs = await sql(database_url, "SELECT count(*) FROM jobs WHERE kind = 'email.account_deleted'")
    assert jobs[0][0] == 1
