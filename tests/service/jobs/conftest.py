"""Fixtures for the job tests: a pool on the test's database, SMTP on loopback, workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import asyncpg
import pytest

from loopwise.service.jobs.email import SmtpMailer
from loopwise.service.jobs.queue import Job
from loopwise.service.jobs.welcome import WELCOME_EMAIL, welcome_handler
from loopwise.service.jobs.worker import Worker
from tests.service.jobs.smtp import SmtpServer, smtp_server

SENDER = "loopwise <hello@loopwise.test>"

# Short leases and fast backoff: failures and recoveries happen in tens of milliseconds.
FAST: dict[str, Any] = {
    "lease": 2.0,
    "job_timeout": 1.5,
    "poll_interval": 0.2,
    "grace": 1.0,
    "backoff_base": 0.02,
    "backoff_max": 0.1,
}

Handler = Callable[[Job], Awaitable[None]]


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=6) as p:
        yield p


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServer]:
    async with smtp_server() as server:
        yield server


class Observed:
    """Wraps a job handler to report each attempt's outcome on a queue (never changes it)."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.outcomes: asyncio.Queue[tuple[Job, BaseException | None]] = asyncio.Queue()

    async def __call__(self, job: Job) -> None:
        try:
            await self._handler(job)
        except BaseException as exc:
            self.outcomes.put_nowait((job, exc))
            raise
        self.outcomes.put_nowait((job, None))


def smtp_mailer(
    port: int, *, connect_timeout: float = 1.0, send_timeout: float = 1.0
) -> SmtpMailer:
    return SmtpMailer(
        "127.0.0.1", port, tls="none", connect_timeout=connect_timeout, send_timeout=send_timeout
    )


def welcome_handlers(port: int, **timeouts: float) -> dict[str, Handler]:
    return {WELCOME_EMAIL: welcome_handler(smtp_mailer(port, **timeouts), sender=SENDER)}


def worker(
    pool: asyncpg.Pool, handlers: Mapping[str, Handler], dsn: str | None, **overrides: Any
) -> Worker:
    return Worker(pool, handlers, dsn=dsn, **(FAST | overrides))


async def job_row(pool: asyncpg.Pool, job_id: int) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    assert row is not None
    return row
