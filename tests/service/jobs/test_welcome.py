"""Registration and its welcome email: one transaction, delivered after the response."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from email.message import EmailMessage

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from loopwise.service.app import create_app
from loopwise.service.settings import Settings
from tests.service.jobs.smtp import SmtpServer, smtp_server

PASSWORD = "correct horse battery"


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServer]:
    async with smtp_server() as server:
        yield server


@contextlib.asynccontextmanager
async def mailing_client(settings: Settings, smtp: SmtpServer) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its in-process job worker sending through the test's SMTP server.

    Leaving the block stops the app, which lets running jobs finish: afterwards the jobs
    table says what the worker did.
    """
    configured = settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": smtp.port, "smtp_tls": "none"}
    )
    app: FastAPI = create_app(configured)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


async def _jobs(database_url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch("SELECT kind, state, payload FROM jobs ORDER BY id")
    finally:
        await conn.close()


def _parts(message: EmailMessage) -> dict[str, str]:
    return {
        part.get_content_type(): part.get_content()
        for part in message.walk()
        if not part.is_multipart()
    }


async def test_register_sends_exactly_one_welcome_email(
    settings: Settings, smtp: SmtpServer, database_url: str
) -> None:
    """A registration delivers one email to its address, with the name in both parts."""
    async with mailing_client(settings, smtp) as client:
        response = await client.post(
            "/register",
            json={"email": "ada@example.com", "password": PASSWORD, "display_name": "Ada <Byron>"},
        )
        assert response.status_code == 201
        message = await smtp.inbox.get()
    assert message["To"].addresses[0].addr_spec == "ada@example.com"
    parts = _parts(message)
    assert "Ada <Byron>" in parts["text/plain"]
    assert "Ada &lt;Byron&gt;" in parts["text/html"]
    assert "Ada <Byron>" not in parts["text/html"]
    jobs = await _jobs(database_url)
    assert [(j["kind"], j["state"]) for j in jobs] == [("email.welcome", "done")]
    assert len(smtp.accepted) == 1


async def test_rolled_back_registration_enqueues_nothing(
    settings: Settings, smtp: SmtpServer, database_url: str
) -> None:
    """A registration refused inside its transaction (email taken) leaves no job, no email."""
    body = {"email": "twice@example.com", "password": PASSWORD, "display_name": "Twice"}
    async with mailing_client(settings, smtp) as client:
        assert (await client.post("/register", json=body)).status_code == 201
        again = {**body, "email": "TWICE@example.com"}
        assert (await client.post("/register", json=again)).status_code == 409
        await smtp.inbox.get()
    jobs = await _jobs(database_url)
    assert len(jobs) == 1
    assert jobs[0]["state"] == "done"
    assert len(smtp.accepted) == 1


async def test_register_does_not_wait_for_the_mail_server(
    settings: Settings, smtp: SmtpServer
) -> None:
    """The 201 arrives while the mail server is still holding the message."""
    answered = asyncio.Event()

    async def hold_until_answered(message: EmailMessage) -> None:
        await answered.wait()
        return None

    smtp.on_data = hold_until_answered
    async with mailing_client(settings, smtp) as client:
        response = await client.post(
            "/register",
            json={"email": "slow@example.com", "password": PASSWORD, "display_name": "Slow"},
        )
        assert response.status_code == 201
        answered.set()
        message = await smtp.inbox.get()
    assert message["To"].addresses[0].addr_spec == "slow@example.com"
