"""The worker in this process against the real PostgreSQL and a real SMTP server."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage

import aiosmtplib
import asyncpg
import pytest

from loopwise.patterns import ResourceClosed
from loopwise.patterns.exceptions import DeadlineExceeded
from loopwise.service.jobs import queue
from loopwise.service.jobs.queue import Job
from loopwise.service.jobs.running import PermanentJobError
from loopwise.service.jobs.welcome import WELCOME_EMAIL, enqueue_welcome_email
from loopwise.service.jobs.worker import Worker
from tests.service.jobs.conftest import Observed, job_row, welcome_handlers, worker
from tests.service.jobs.smtp import SmtpServer, free_port, silent_server, smtp_server


async def _register(pool: asyncpg.Pool, email: str, name: str, *, commit: bool = True) -> int:
    """What POST /register does: the user row and its welcome job in one transaction."""
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("CREATE TEMP TABLE IF NOT EXISTS users (email text, name text)")
        await conn.execute("INSERT INTO users VALUES ($1, $2)", email, name)
        job_id = await enqueue_welcome_email(conn, email=email, name=name, max_attempts=5)
        await (transaction.commit() if commit else transaction.rollback())
        return job_id


def _text(message: EmailMessage) -> dict[str, str]:
    return {part.get_content_type(): part.get_content() for part in message.iter_parts()}


async def test_committed_registration_sends_exactly_one_email(
    pool: asyncpg.Pool, database_url: str, smtp: SmtpServer
) -> None:
    """A committed enqueue → one email with the right recipient, name and both parts."""
    async with worker(pool, welcome_handlers(smtp.port), database_url, poll_interval=60):
        # A long poll interval: only the NOTIFY sent at commit can wake the worker in time.
        job_id = await _register(pool, "ada@example.com", "Ada <Lovelace>")
        message = await smtp.inbox.get()
    assert message["To"].addresses[0].addr_spec == "ada@example.com"
    assert message["Message-ID"] == f"<welcome.{job_id}@loopwise.test>"
    parts = _text(message)
    assert "Hello Ada <Lovelace>," in parts["text/plain"]
    assert "Hello Ada &lt;Lovelace&gt;," in parts["text/html"]
    assert len(smtp.accepted) == 1
    row = await job_row(pool, job_id)
    assert (row["state"], row["attempts"]) == ("done", 1)


async def test_rolled_back_registration_sends_nothing(
    pool: asyncpg.Pool, database_url: str, smtp: SmtpServer
) -> None:
    """A rolled-back enqueue leaves no job and sends no email."""
    async with worker(pool, welcome_handlers(smtp.port), database_url):
        await _register(pool, "gone@example.com", "Gone", commit=False)
        await _register(pool, "kept@example.com", "Kept")
        # Jobs run in commit order: once the later one arrived, the earlier would have too.
        message = await smtp.inbox.get()
    assert message["To"].addresses[0].addr_spec == "kept@example.com"
    assert len(smtp.accepted) == 1
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 1


async def test_smtp_down_retries_with_backoff_then_delivers_once(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """With SMTP down the job retries with backoff; once it is up, the email arrives once."""
    port = free_port()
    handlers = welcome_handlers(port)
    observed = Observed(handlers[WELCOME_EMAIL])
    async with worker(pool, {WELCOME_EMAIL: observed}, database_url):
        job_id = await _register(pool, "ada@example.com", "Ada")
        for attempt in (1, 2, 3):
            job, error = await observed.outcomes.get()
            assert (job.attempt, type(error)) == (attempt, aiosmtplib.SMTPConnectError)
        async with smtp_server(port) as smtp:
            message = await smtp.inbox.get()
            job, error = await observed.outcomes.get()
            assert error is None
    assert message["Message-ID"] == f"<welcome.{job_id}@loopwise.test>"
    assert len(smtp.accepted) == 1
    row = await job_row(pool, job_id)
    assert row["state"] == "done"
    assert row["attempts"] == job.attempt >= 4
    assert "Connect call failed" in row["last_error"]


async def test_stalled_smtp_hits_the_send_deadline_and_retries(
    pool: asyncpg.Pool, database_url: str, smtp: SmtpServer
) -> None:
    """SMTP that accepts and never answers: the deadline fires, the job retries, then sends."""
    release = asyncio.Event()
    calls = 0

    async def stall_first(message: EmailMessage) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await release.wait()  # never set: the first attempt must time out
        return None

    smtp.on_data = stall_first
    observed = Observed(welcome_handlers(smtp.port, send_timeout=0.3)[WELCOME_EMAIL])
    async with worker(pool, {WELCOME_EMAIL: observed}, database_url):
        job_id = await _register(pool, "ada@example.com", "Ada")
        _, error = await observed.outcomes.get()
        assert isinstance(error, DeadlineExceeded)
        message = await smtp.inbox.get()
    assert message["Message-ID"] == f"<welcome.{job_id}@loopwise.test>"
    row = await job_row(pool, job_id)
    assert (row["state"], row["attempts"]) == ("done", 2)
    assert "deadline of 0.3s exceeded" in row["last_error"]


async def test_silent_smtp_hits_the_connect_deadline(pool: asyncpg.Pool, database_url: str) -> None:
    """A server that never greets fails each attempt at the connect deadline, then dead."""
    async with silent_server() as port:
        observed = Observed(welcome_handlers(port, connect_timeout=0.2)[WELCOME_EMAIL])
        async with worker(pool, {WELCOME_EMAIL: observed}, database_url):
            async with pool.acquire() as conn:
                job_id = await enqueue_welcome_email(conn, email="a@b.c", name="A", max_attempts=2)
            for _ in range(2):
                _, error = await observed.outcomes.get()
                assert isinstance(error, DeadlineExceeded)
    row = await job_row(pool, job_id)
    assert (row["state"], row["attempts"]) == ("dead", 2)
    assert "deadline of 0.2s exceeded" in row["last_error"]


async def test_polling_finds_jobs_without_notifications(
    pool: asyncpg.Pool, smtp: SmtpServer
) -> None:
    """A lost NOTIFY only delays: a worker that never listens still runs the job by polling."""
    async with worker(pool, welcome_handlers(smtp.port), dsn=None, poll_interval=0.05):
        await pool.execute(
            """INSERT INTO jobs (kind, payload, max_attempts)
               VALUES ('email.welcome', '{"email": "p@example.com", "name": "P"}', 1)"""
        )
        message = await smtp.inbox.get()
    assert message["To"].addresses[0].addr_spec == "p@example.com"


class _Gate:
    """A job handler that blocks until released, reporting how many run at once."""

    def __init__(self) -> None:
        self.started: asyncio.Queue[Job] = asyncio.Queue()
        self.release = asyncio.Event()
        self.running = 0
        self.most = 0

    async def __call__(self, job: Job) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        self.started.put_nowait(job)
        try:
            await self.release.wait()
        finally:
            self.running -= 1


async def _enqueue_n(pool: asyncpg.Pool, n: int, kind: str = "test.gate", **kw: int) -> list[int]:
    async with pool.acquire() as conn:
        return [
            await queue.enqueue(conn, kind, {}, max_attempts=kw.get("max_attempts", 3))
            for _ in range(n)
        ]


async def test_concurrency_is_bounded(pool: asyncpg.Pool, database_url: str) -> None:
    """A worker never runs more jobs at once than its concurrency."""
    gate = _Gate()
    async with worker(pool, {"test.gate": gate}, database_url, concurrency=2) as w:
        ids = await _enqueue_n(pool, 5)
        for _ in range(2):
            await gate.started.get()
        assert w.stats().running == 2
        assert await pool.fetchval("SELECT count(*) FROM jobs WHERE state = 'running'") == 2
        gate.release.set()
        for _ in range(3):
            await gate.started.get()
    assert gate.most == 2
    states = await pool.fetch("SELECT state FROM jobs WHERE id = ANY($1)", ids)
    assert {r["state"] for r in states} == {"done"}


async def test_graceful_stop_finishes_within_grace_and_releases_the_rest(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """On stop, a job that ends within the grace is done; one that does not is handed back."""
    quick, slow = asyncio.Event(), asyncio.Event()

    async def handler(job: Job) -> None:
        started.put_nowait(job)
        await (quick if job.payload["quick"] else slow).wait()

    started: asyncio.Queue[Job] = asyncio.Queue()
    async with pool.acquire() as conn:
        fast_id = await queue.enqueue(conn, "test.stop", {"quick": True}, max_attempts=3)
        slow_id = await queue.enqueue(conn, "test.stop", {"quick": False}, max_attempts=3)
    w = worker(pool, {"test.stop": handler}, database_url, grace=0.3)
    async with w:
        await started.get()
        await started.get()
        loop = asyncio.get_running_loop()
        loop.call_soon(quick.set)  # the quick job finishes during the grace period
    assert w.stats().released == 1
    done, back = await job_row(pool, fast_id), await job_row(pool, slow_id)
    assert done["state"] == "done"
    assert (back["state"], back["attempts"], back["lease_owner"]) == ("queued", 1, None)
    assert "worker stopped" in back["last_error"]


async def test_job_timeout_retries(pool: asyncpg.Pool, database_url: str) -> None:
    """An attempt that outlives the job timeout is cancelled and retried, then dead."""
    gate = _Gate()
    async with worker(pool, {"test.gate": gate}, database_url, job_timeout=0.1):
        [job_id] = await _enqueue_n(pool, 1, max_attempts=2)
        await gate.started.get()
        await gate.started.get()
    row = await job_row(pool, job_id)
    assert row["attempts"] == 2
    assert "timed out" in row["last_error"]


async def test_permanent_error_and_exhausted_attempts_go_dead(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """A permanent error buries the job at once; others retry until attempts run out."""
    seen: asyncio.Queue[Job] = asyncio.Queue()

    async def handler(job: Job) -> None:
        seen.put_nowait(job)
        if job.payload["permanent"]:
            raise PermanentJobError("no such mailbox")
        raise RuntimeError(f"flaky {job.attempt}")

    async with worker(pool, {"test.fail": handler}, database_url) as w:
        async with pool.acquire() as conn:
            hopeless = await queue.enqueue(conn, "test.fail", {"permanent": True}, max_attempts=5)
            flaky = await queue.enqueue(conn, "test.fail", {"permanent": False}, max_attempts=3)
        for _ in range(4):
            await seen.get()
    assert w.stats().dead == 2
    assert w.stats().retried == 2
    a, b = await job_row(pool, hopeless), await job_row(pool, flaky)
    assert (a["state"], a["attempts"], a["last_error"]) == ("dead", 1, "no such mailbox")
    assert (b["state"], b["attempts"], b["last_error"]) == ("dead", 3, "RuntimeError('flaky 3')")


async def test_a_lost_lease_stops_the_job(pool: asyncpg.Pool, database_url: str) -> None:
    """When another worker takes a job over, this one stops it and cannot write its result."""
    gate = _Gate()
    async with worker(pool, {"test.gate": gate}, database_url, lease=0.3) as w:
        [job_id] = await _enqueue_n(pool, 1)
        await gate.started.get()
        # Another worker takes the job over, as after this process stalled past its lease.
        await pool.execute("UPDATE jobs SET attempts = attempts + 1, lease_owner = 'other'")
        await gate.started.get()  # renewal noticed and stopped it; reclaimed, it runs again
        assert (w.stats().lost_leases, gate.running, gate.most) == (1, 1, 1)
        gate.release.set()
    row = await job_row(pool, job_id)
    assert (row["state"], row["attempts"]) == ("done", 3)


def test_worker_arguments_are_checked(pool: asyncpg.Pool) -> None:
    """Nonsense concurrency, missing handlers and bad timings are refused with their name."""
    with pytest.raises(ValueError, match="`concurrency` must be at least 1"):
        Worker(pool, {"k": Observed(lambda job: asyncio.sleep(0))}, concurrency=0)
    with pytest.raises(ValueError, match="`handlers` must name"):
        Worker(pool, {})
    with pytest.raises(ValueError, match="`lease` must be positive"):
        Worker(pool, {"k": Observed(lambda job: asyncio.sleep(0))}, lease=0)


async def test_worker_cannot_restart(pool: asyncpg.Pool) -> None:
    """A worker runs once: starting it again after close is refused."""
    w = worker(pool, {"test.gate": _Gate()}, dsn=None)
    async with w:
        pass
    await w.aclose()
    with pytest.raises(ResourceClosed, match="Cannot reopen"):
        await w.__aenter__()
