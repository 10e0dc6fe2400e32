"""Worker processes against one database: SIGKILL mid-send loses nothing; many share fairly.

The kill test reads ``LOOPWISE_SOAK_JOBS`` and ``LOOPWISE_SOAK_KILLS`` so that
``scripts/soak-jobs`` can run the same check for as long as you like.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from email.message import EmailMessage
from pathlib import Path

import asyncpg

from loopwise.service.jobs import count_by_state
from loopwise.service.jobs.welcome import enqueue_welcome_email
from tests.service.jobs.processes import WorkerProcesses, worker_env
from tests.service.jobs.smtp import SmtpServer, smtp_server

_log = logging.getLogger("loopwise.soak")


async def _register_many(pool: asyncpg.Pool, count: int, batch: int = 100) -> None:
    async with pool.acquire() as conn:
        for start in range(0, count, batch):
            async with conn.transaction():
                for n in range(start, min(start + batch, count)):
                    await enqueue_welcome_email(
                        conn, email=f"user{n}@example.com", name=f"User {n}", max_attempts=100
                    )


async def _distinct(inbox: asyncio.Queue[EmailMessage], count: int) -> Counter[str]:
    """Wait until ``count`` distinct Message-IDs arrived; return how often each did."""
    seen: Counter[str] = Counter()
    while len(seen) < count:
        seen[(await inbox.get())["Message-ID"]] += 1
    return seen


async def _all_done(pool: asyncpg.Pool, count: int) -> None:
    """Poll until the worker processes have recorded every job done (they are external)."""
    query = "SELECT count(*) FROM jobs WHERE state = 'done'"
    while True:  # bounded by the caller's timeout
        if await pool.fetchval(query) >= count:
            return
        await asyncio.sleep(0.1)


async def test_sigkill_mid_send_loses_no_email(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, record_property: Callable[..., None]
) -> None:
    """Worker processes SIGKILLed mid-send, again and again: every job ends with its email."""
    jobs = int(os.environ.get("LOOPWISE_SOAK_JOBS", "40"))
    # 8 kills: four before our 250 and four after it, each a full process restart (seconds
    # each at load 15); scripts/soak-jobs asks for as many more as it likes.
    kills = int(os.environ.get("LOOPWISE_SOAK_KILLS", "8"))
    slots = 3
    inbox: asyncio.Queue[EmailMessage] = asyncio.Queue()
    accepted: list[EmailMessage] = []
    procs = WorkerProcesses(tmp_path)
    budget = {"left": kills, "after_ack": 0}
    dying: set[int] = set()

    async with AsyncExitStack() as stack:
        tg = await stack.enter_async_context(asyncio.TaskGroup())

        async def restart(slot: int) -> None:
            await procs.kill_and_restart(slot)
            dying.discard(slot)

        def on_data_for(slot: int) -> Callable[[EmailMessage], Awaitable[str | None]]:
            async def on_data(message: EmailMessage) -> str | None:
                if budget["left"] <= 0 or slot in dying:
                    return None
                budget["left"] -= 1
                dying.add(slot)
                tg.create_task(restart(slot))
                if budget["left"] % 2:
                    # Killed before our reply: the message was never accepted.
                    await asyncio.Event().wait()
                # Killed right after our 250: delivered, but the worker may die before it
                # records that, so the job runs again (the at-least-once duplicate).
                budget["after_ack"] += 1
                return None

            return on_data

        servers: list[SmtpServer] = []
        for slot in range(slots):
            state = SmtpServer(port=0, inbox=inbox, accepted=accepted, on_data=on_data_for(slot))
            servers.append(await stack.enter_async_context(smtp_server(0, state)))
        for slot, server in enumerate(servers):
            # One job at a time, so each duplicate is traceable to one kill after our 250.
            await procs.start(slot, worker_env(database_url, server.port, jobs_concurrency=1))
        await _register_many(pool, jobs)
        async with asyncio.timeout(100 + jobs / 10 + kills):
            received = await _distinct(inbox, jobs)
            # A job whose worker died after our 250 stays running until its lease expires
            # and another worker sends it again: wait for that too.
            await _all_done(pool, jobs)
        codes = await procs.stop()
        for server in servers:
            server.on_data = None

    # SIGTERM is a clean exit; -SIGTERM is a process stopped while still importing.
    assert set(codes) <= {0, -signal.SIGTERM}
    assert procs.kills == kills
    assert await count_by_state(pool) == {"queued": 0, "running": 0, "done": jobs, "dead": 0}
    duplicates = len(accepted) - jobs
    assert duplicates <= budget["after_ack"]  # only a kill between send and record duplicates
    ids = [row["id"] for row in await pool.fetch("SELECT id FROM jobs")]
    assert set(received) == {f"<welcome.{n}@loopwise.test>" for n in ids}
    record_property("kills", procs.kills)
    record_property("duplicates", duplicates)
    _log.warning("soak: jobs=%d kills=%d duplicates=%d", jobs, procs.kills, duplicates)


async def test_many_worker_processes_share_one_queue(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """Three processes on one database: 1,000 jobs give 1,000 emails, none sent twice at once."""
    jobs, slots = 1000, 3
    in_flight: set[str] = set()
    overlaps: list[str] = []

    def on_rcpt(address: str) -> None:
        if address in in_flight:
            overlaps.append(address)
        in_flight.add(address)
        return None

    async def on_data(message: EmailMessage) -> None:
        in_flight.discard(message["To"].addresses[0].addr_spec)

    procs = WorkerProcesses(tmp_path)
    async with smtp_server() as smtp:
        smtp.on_rcpt = on_rcpt
        smtp.on_data = on_data
        for slot in range(slots):
            # Nothing fails here, so no lease may expire and no send or job time out: at
            # load 15 on 2 cores, runs with 2 s leases and 5 s send timeouts saw one address
            # in flight twice. Generous bounds: the test is about sharing, not timing.
            env = worker_env(
                database_url,
                smtp.port,
                jobs_concurrency=8,
                jobs_lease=60,
                jobs_timeout=120,
                smtp_connect_timeout=60,
                smtp_send_timeout=60,
            )
            await procs.start(slot, env)
        await _register_many(pool, jobs)
        async with asyncio.timeout(100):
            received = await _distinct(smtp.inbox, jobs)
            await _all_done(pool, jobs)
        codes = await procs.stop()
    assert set(codes) <= {0, -signal.SIGTERM}
    assert overlaps == []
    assert len(smtp.accepted) == jobs
    assert set(received.values()) == {1}
    assert await count_by_state(pool) == {"queued": 0, "running": 0, "done": jobs, "dead": 0}
    # No attempt failed or lost its lease: every job ran exactly once.
    assert await pool.fetchval("SELECT count(*) FROM jobs WHERE attempts <> 1") == 0
