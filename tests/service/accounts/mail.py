"""The app sending its emails to a real SMTP server in the test, and reading links back."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from email.message import EmailMessage

import asyncpg
import httpx
from asgi_lifespan import LifespanManager

from loopwise.service.app import create_app
from loopwise.service.settings import Settings
from tests.service.jobs.smtp import SmtpServer

__all__ = [
    "PUBLIC_URL",
    "instance",
    "mailing",
    "next_mail",
    "parts",
    "sql",
    "token_in",
]

PUBLIC_URL = "https://accounts.loopwise.test"


def mailing(settings: Settings, smtp: SmtpServer, **overrides: object) -> Settings:
    """``settings`` with emails going to ``smtp`` and links starting with PUBLIC_URL."""
    return settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "smtp_tls": "none",
            "smtp_from": "loopwise <accounts@loopwise.test>",
            "public_url": PUBLIC_URL,
            "jobs_poll_interval": 0.2,
            **overrides,
        }
    )


@contextlib.asynccontextmanager
async def instance(settings: Settings, host: str = "t") -> AsyncIterator[httpx.AsyncClient]:
    """One running instance of the service (its lifespan: pool, cache, worker)."""
    async with LifespanManager(create_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as client:
            yield client


async def next_mail(smtp: SmtpServer, to: str, within: float = 20.0) -> EmailMessage:
    """The next message the server accepts for ``to`` (others are skipped)."""
    async with asyncio.timeout(within):
        while True:
            message = await smtp.inbox.get()
            if message["To"].addresses[0].addr_spec == to:
                return message


def parts(message: EmailMessage) -> dict[str, str]:
    return {
        part.get_content_type(): part.get_content()
        for part in message.walk()
        if not part.is_multipart()
    }


def token_in(message: EmailMessage, path: str) -> str:
    """The token of the ``PUBLIC_URL + path`` link in the message's plain-text part."""
    match = re.search(
        re.escape(f"{PUBLIC_URL}{path}?token=") + r"([A-Za-z0-9_-]+)", parts(message)["text/plain"]
    )
    assert match is not None, parts(message)["text/plain"]
    return match[1]


async def sql(database_url: str, query: str, *args: object) -> list[asyncpg.Record]:
    """Run one statement on a connection of its own; the rows it returned."""
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()
