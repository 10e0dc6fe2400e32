"""Jobs processed per second by ``loopwise worker`` processes, one and then two.

    result = run_jobs(dsn, smtp_port, jobs=2000, workers=2, log_dir=logs)

Queues ``jobs`` welcome emails at once (one INSERT, then the NOTIFY the queue listens
for), starts ``workers`` worker processes sending to the loopback SMTP sink, and times
from the first finished job to the last, so process start-up is not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from loopwise.service.jobs.queue import CHANNEL
from loopwise.service.jobs.welcome import WELCOME_EMAIL

__all__ = ["JobsResult", "run_jobs"]

_QUEUE = """
    INSERT INTO jobs (kind, payload, max_attempts)
    SELECT $1, jsonb_build_object('email', 'job' || g || '@bench.example.com',
                                  'name', 'Job ' || g), 8
    FROM generate_series(1, $2) AS g
"""
_FINISHED = "SELECT count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE state = 'dead')"
_BATCH = " FROM jobs WHERE id > $1"


@dataclass(frozen=True, slots=True)
class JobsResult:
    workers: int
    jobs: int
    seconds: float
    done: int
    dead: int

    @property
    def per_second(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0


async def _queue(dsn: str, jobs: int) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        first: int = await conn.fetchval("SELECT coalesce(max(id), 0) FROM jobs")
        await conn.execute(_QUEUE, WELCOME_EMAIL, jobs)
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, WELCOME_EMAIL)
        return first
    finally:
        await conn.close()


async def _count(dsn: str, after: int) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(_FINISHED + _BATCH, after)
    finally:
        await conn.close()
    assert row is not None
    return int(row[0]), int(row[1])


def run_jobs(
    dsn: str, smtp_port: str, *, jobs: int, workers: int, log_dir: Path, timeout: float = 300.0
) -> JobsResult:
    """Queue ``jobs`` emails and time ``workers`` worker processes draining them."""
    after = asyncio.run(_queue(dsn, jobs))
    env = {
        **os.environ,
        "LOOPWISE_DATABASE_URL": dsn,
        "LOOPWISE_MIGRATE_ON_START": "false",
        "LOOPWISE_SMTP_HOST": "127.0.0.1",
        "LOOPWISE_SMTP_PORT": smtp_port,
        "LOOPWISE_SMTP_TLS": "none",
        "LOOPWISE_LOG_LEVEL": "warning",
        "LOOPWISE_LOG_FORMAT": "json",
    }
    processes = []
    logs = []
    try:
        for n in range(workers):
            log = (log_dir / f"worker-{workers}-{n}.log").open("wb")
            logs.append(log)
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "loopwise", "worker"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            )
        # A bounded poll of external processes: the database is where progress shows.
        started = first_done = time.monotonic()
        done_at_start = 0
        done = dead = 0
        while time.monotonic() - started < timeout:
            done, dead = asyncio.run(_count(dsn, after))
            now = time.monotonic()
            if done and not done_at_start:
                first_done, done_at_start = now, done
            if done + dead >= jobs:
                break
            time.sleep(0.1)
        seconds = time.monotonic() - first_done
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for log in logs:
            log.close()
    return JobsResult(workers, jobs, seconds, done - done_at_start, dead)
