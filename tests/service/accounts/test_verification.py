"""Email verification: the welcome email's link, once, in time, newest only; the rule."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime

import httpx
import pytest

from loopwise.service.settings import Settings
from tests.service.accounts.conftest import PASSWORD, login
from tests.service.accounts.mail import (
    PUBLIC_URL,
    instance,
    mailing,
    next_mail,
    parts,
    sql,
    token_in,
)
from tests.service.jobs.smtp import SmtpServer, smtp_server

ORDER = {"items": [{"sku": "tea", "quantity": 1, "unit_price_cents": 250}]}


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServer]:
    async with smtp_server() as server:
        yield server


@pytest.fixture
async def app_client(settings: Settings, smtp: SmtpServer) -> AsyncIterator[httpx.AsyncClient]:
    async with instance(mailing(settings, smtp, verify_resend_max=2)) as client:
        yield client


async def _register(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    body = {"email": email, "password": PASSWORD, "display_name": "Ada <Byron>"}
    # A forged Host header must not reach the link: it comes from LOOPWISE_PUBLIC_URL.
    response = await client.post("/register", json=body, headers={"Host": "evil.example"})
    assert response.status_code == 201, response.text
    token = await login(client, email, PASSWORD)
    return {"Authorization": f"Bearer {token}"}


async def test_welcome_link_verifies_once(app_client: httpx.AsyncClient, smtp: SmtpServer) -> None:
    """The token read from the welcome email verifies the address once; reuse is refused."""
    auth = await _register(app_client, "ada@example.com")
    assert (await app_client.get("/users/me", headers=auth)).json()["email_verified"] is False
    message = await next_mail(smtp, "ada@example.com")
    assert "evil.example" not in message.as_string()
    token = token_in(message, "/verify-email")
    assert (await app_client.post("/verify-email", json={"token": token})).status_code == 204
    assert (await app_client.get("/users/me", headers=auth)).json()["email_verified"] is True
    again = await app_client.post("/verify-email", json={"token": token})
    assert again.status_code == 403
    assert again.headers["content-type"] == "application/problem+json"


async def test_welcome_email_is_what_people_expect(
    app_client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    """Text and HTML parts, a Date, a Message-ID on the sender's domain, the configured From."""
    await _register(app_client, "bea@example.com")
    message = await next_mail(smtp, "bea@example.com")
    assert set(parts(message)) == {"text/plain", "text/html"}
    assert parsedate_to_datetime(message["Date"]).tzinfo is not None
    assert message["Message-ID"].endswith("@loopwise.test>")
    assert message["From"].addresses[0].addr_spec == "accounts@loopwise.test"
    html = parts(message)["text/html"]
    assert f'href="{PUBLIC_URL}/verify-email?token=' in html
    assert "Ada &lt;Byron&gt;" in html


async def test_expired_link_is_refused(
    app_client: httpx.AsyncClient, smtp: SmtpServer, database_url: str
) -> None:
    """A verification token past its expiry verifies nothing."""
    await _register(app_client, "cy@example.com")
    token = token_in(await next_mail(smtp, "cy@example.com"), "/verify-email")
    await sql(database_url, "UPDATE account_tokens SET expires_at = now() - interval '1 second'")
    assert (await app_client.post("/verify-email", json={"token": token})).status_code == 403
    rows = await sql(database_url, "SELECT email_verified_at FROM users")
    assert rows[0]["email_verified_at"] is None


async def test_resend_supersedes_and_is_throttled(
    app_client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    """A resent link ends the older one; past the limit a resend is 429; verified is 409."""
    auth = await _register(app_client, "dee@example.com")
    first = token_in(await next_mail(smtp, "dee@example.com"), "/verify-email")
    resent = await app_client.post("/verify-email/resend", headers=auth)
    assert resent.status_code == 202
    second = token_in(await next_mail(smtp, "dee@example.com"), "/verify-email")
    assert second != first
    assert (await app_client.post("/verify-email", json={"token": first})).status_code == 403
    assert (await app_client.post("/verify-email/resend", headers=auth)).status_code == 202
    throttled = await app_client.post("/verify-email/resend", headers=auth)
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) > 0
    third = token_in(await next_mail(smtp, "dee@example.com"), "/verify-email")
    assert (await app_client.post("/verify-email", json={"token": third})).status_code == 204
    assert (await app_client.post("/verify-email/resend", headers=auth)).status_code == 409


async def test_unverified_account_may_not_order(
    app_client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    """Unverified: profile and preferences work, orders are 403; verified: orders work."""
    auth = await _register(app_client, "eve@example.com")
    assert (await app_client.get("/users/me/preferences", headers=auth)).status_code == 200
    renamed = await app_client.patch("/users/me", headers=auth, json={"display_name": "Eve"})
    assert renamed.status_code == 200
    refused = await app_client.post("/users/me/orders", headers=auth, json=ORDER)
    assert refused.status_code == 403
    assert "Verify your email" in refused.json()["detail"]
    token = token_in(await next_mail(smtp, "eve@example.com"), "/verify-email")
    assert (await app_client.post("/verify-email", json={"token": token})).status_code == 204
    placed = await app_client.post("/users/me/orders", headers=auth, json=ORDER)
    assert placed.status_code == 201


@pytest.mark.parametrize("token", ["", "short", "x" * 43, "A" * 44, "é" * 43])
async def test_malformed_tokens_are_refused(app_client: httpx.AsyncClient, token: str) -> None:
    """Tokens of the wrong shape are a 422 or a 403, never a 500."""
    response = await app_client.post("/verify-email", json={"token": token})
    assert response.status_code in (403, 422)
