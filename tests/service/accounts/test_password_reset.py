"""Password reset: one answer for every address, one working link, sessions ended everywhere."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from loopwise.service.settings import Settings
from tests.service.accounts.conftest import PASSWORD, announced, cache_stats, listening, login
from tests.service.accounts.mail import instance, mailing, next_mail, sql, token_in
from tests.service.jobs.smtp import SmtpServer, smtp_server

NEW_PASSWORD = "a brand new secret"


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServer]:
    async with smtp_server() as server:
        yield server


@pytest.fixture
def mail_settings(settings: Settings, smtp: SmtpServer) -> Settings:
    return mailing(settings, smtp, password_reset_max_per_email=3)


@pytest.fixture
async def app_client(mail_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with instance(mail_settings) as client:
        yield client


async def _account(client: httpx.AsyncClient, smtp: SmtpServer, email: str) -> str:
    """Register ``email`` (its welcome email consumed) and log in; the bearer token."""
    body = {"email": email, "password": PASSWORD, "display_name": "Ada"}
    assert (await client.post("/register", json=body)).status_code == 201
    await next_mail(smtp, email)
    return await login(client, email, PASSWORD)


async def _reset_token(client: httpx.AsyncClient, smtp: SmtpServer, email: str) -> str:
    assert (await client.post("/password-reset", json={"email": email})).status_code == 202
    return token_in(await next_mail(smtp, email), "/reset-password")


async def _confirm(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(
        "/password-reset/confirm", json={"token": token, "password": NEW_PASSWORD}
    )


async def _login_status(client: httpx.AsyncClient, email: str, password: str) -> int:
    response = await client.post("/login", json={"email": email, "password": password})
    return response.status_code


async def test_reset_link_sets_the_password_once(
    app_client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    """The emailed token sets a new password once; the old one stops working."""
    await _account(app_client, smtp, "ada@example.com")
    token = await _reset_token(app_client, smtp, "ada@example.com")
    assert (await _confirm(app_client, token)).status_code == 204
    assert await _login_status(app_client, "ada@example.com", PASSWORD) == 401
    assert await _login_status(app_client, "ada@example.com", NEW_PASSWORD) == 200
    reused = await _confirm(app_client, token)
    assert reused.status_code == 403
    assert reused.headers["content-type"] == "application/problem+json"


async def test_known_and_unknown_addresses_get_identical_answers(
    app_client: httpx.AsyncClient, smtp: SmtpServer, database_url: str
) -> None:
    """Same status, body and headers, and the same work: one job each; no mail for nobody."""
    await _account(app_client, smtp, "known@example.com")
    known = await app_client.post("/password-reset", json={"email": "known@example.com"})
    unknown = await app_client.post("/password-reset", json={"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 202
    assert known.content == unknown.content

    def comparable(response: httpx.Response) -> dict[str, str]:
        return {k: v for k, v in response.headers.items() if k != "x-request-id"}

    assert comparable(known) == comparable(unknown)
    await next_mail(smtp, "known@example.com")
    rows = await sql(
        database_url,
        "SELECT payload ->> 'email' AS email, priority, user_id FROM jobs "
        "WHERE kind = 'email.password_reset' ORDER BY id",
    )
    assert [(r["email"], r["priority"], r["user_id"]) for r in rows] == [
        ("known@example.com", 10, None),
        ("nobody@example.com", 10, None),
    ]
    assert all(m["To"].addresses[0].addr_spec != "nobody@example.com" for m in smtp.accepted)


async def test_expired_token_is_refused(
    app_client: httpx.AsyncClient, smtp: SmtpServer, database_url: str
) -> None:
    """A reset token past its expiry changes nothing."""
    await _account(app_client, smtp, "cy@example.com")
    token = await _reset_token(app_client, smtp, "cy@example.com")
    await sql(database_url, "UPDATE account_tokens SET expires_at = now() - interval '1 second'")
    assert (await _confirm(app_client, token)).status_code == 403
    assert await _login_status(app_client, "cy@example.com", PASSWORD) == 200


async def test_newer_token_ends_the_older(app_client: httpx.AsyncClient, smtp: SmtpServer) -> None:
    """Of two reset emails only the newer link works."""
    await _account(app_client, smtp, "dee@example.com")
    older = await _reset_token(app_client, smtp, "dee@example.com")
    newer = await _reset_token(app_client, smtp, "dee@example.com")
    assert (await _confirm(app_client, older)).status_code == 403
    assert (await _confirm(app_client, newer)).status_code == 204


async def test_password_change_ends_the_token(
    app_client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    """A link mailed before the owner changed the password cannot undo the change."""
    bearer = await _account(app_client, smtp, "eve@example.com")
    token = await _reset_token(app_client, smtp, "eve@example.com")
    changed = await app_client.patch(
        "/users/me",
        headers={"Authorization": f"Bearer {bearer}"},
        json={"password": "changed it myself", "current_password": PASSWORD},
    )
    assert changed.status_code == 200
    assert (await _confirm(app_client, token)).status_code == 403
    assert await _login_status(app_client, "eve@example.com", "changed it myself") == 200


async def test_reset_ends_sessions_on_another_instance(
    app_client: httpx.AsyncClient, mail_settings: Settings, smtp: SmtpServer
) -> None:
    """A session cached by a second instance is refused there once the reset commits."""
    bearer = await _account(app_client, smtp, "fay@example.com")
    auth = {"Authorization": f"Bearer {bearer}"}
    async with instance(mail_settings.model_copy(update={"jobs_in_process": False})) as other:
        await listening(other)
        assert (await other.get("/users/me", headers=auth)).status_code == 200
        assert (await other.get("/users/me", headers=auth)).status_code == 200  # from memory
        before = (await cache_stats(other))["invalidations_total"]
        token = await _reset_token(app_client, smtp, "fay@example.com")
        assert (await _confirm(app_client, token)).status_code == 204
        await announced(other, before)
        assert (await other.get("/users/me", headers=auth)).status_code == 401
        assert (await app_client.get("/users/me", headers=auth)).status_code == 401


async def test_reset_proves_the_address(
    app_client: httpx.AsyncClient, smtp: SmtpServer, database_url: str
) -> None:
    """Using a reset link marks the address verified: the email reached its owner."""
    await _account(app_client, smtp, "gus@example.com")
    token = await _reset_token(app_client, smtp, "gus@example.com")
    assert (await _confirm(app_client, token)).status_code == 204
    rows = await sql(database_url, "SELECT email_verified_at FROM users")
    assert rows[0]["email_verified_at"] is not None


async def test_throttled_per_address_alike_for_unknown_and_known(
    app_client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    """The fourth request for one address in a window is 429, account or not."""
    await _account(app_client, smtp, "hal@example.com")
    for email in ("hal@example.com", "nobody@example.com"):
        statuses = [
            (await app_client.post("/password-reset", json={"email": email})).status_code
            for _ in range(4)
        ]
        assert statuses == [202, 202, 202, 429]
    # Another spelling of the same address shares its counter.
    upper = await app_client.post("/password-reset", json={"email": "HAL@example.com"})
    assert upper.status_code == 429


async def test_throttled_per_client(mail_settings: Settings) -> None:
    """One client asking for many addresses is stopped at its own limit."""
    limited = mail_settings.model_copy(update={"password_reset_max_per_client": 3})
    async with instance(limited) as client:
        statuses = [
            (await client.post("/password-reset", json={"email": f"u{n}@example.com"})).status_code
            for n in range(4)
        ]
    assert statuses == [202, 202, 202, 429]


async def test_wrong_shapes_are_refused(app_client: httpx.AsyncClient) -> None:
    """A malformed address is 422; a weak new password is 422, before any token lookup."""
    bad_email = await app_client.post("/password-reset", json={"email": "not an address"})
    assert bad_email.status_code == 422
    weak = await app_client.post(
        "/password-reset/confirm", json={"token": "A" * 43, "password": "aaaaaaaa"}
    )
    assert weak.status_code == 422


async def test_reset_email_overtakes_a_welcome_backlog(
    mail_settings: Settings, smtp: SmtpServer, database_url: str
) -> None:
    """With 1,000 welcome emails queued first, the reset email arrives long before they do."""
    await sql(
        database_url,
        "INSERT INTO users (email, display_name, password_hash) "
        "VALUES ('ivy@example.com', 'Ivy', 'x')",
    )
    await sql(
        database_url,
        "INSERT INTO jobs (kind, payload, max_attempts) SELECT 'email.welcome', "
        "jsonb_build_object('email', 'bulk' || g || '@example.com', 'name', 'Bulk'), 3 "
        "FROM generate_series(1, 1000) g",
    )
    async with instance(mail_settings.model_copy(update={"jobs_concurrency": 2})) as client:
        assert (
            await client.post("/password-reset", json={"email": "ivy@example.com"})
        ).status_code == 202
        await next_mail(smtp, "ivy@example.com", within=60)
        left = await sql(
            database_url,
            "SELECT count(*) FROM jobs WHERE kind = 'email.welcome' AND state = 'queued'",
        )
    assert left[0][0] > 500
