"""Two measurements of the account lifecycle, each on a fresh migrated database.

    loopwise-bench lifecycle --database-url postgresql://postgres@127.0.0.1/postgres

- Reset latency behind a backlog: ``backlog`` welcome emails are queued, a worker (the
  service's own handlers, concurrency as configured) drains them into a loopback SMTP
  sink that takes ``smtp_delay`` per message, and once it is busy a password reset is
  queued the way ``POST /password-reset`` queues it. Reported: the time from enqueue to
  the sink accepting the reset email, and how many welcome emails were still queued.
- Known versus unknown address: ``POST /password-reset`` through the whole app (ASGI,
  in process, real PostgreSQL, its in-process worker on), alternating a registered and
  an unregistered address ``rounds`` times; reported: median, p90, p99 per kind.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from aiosmtpd.smtp import SMTP, Envelope, Session
from asgi_lifespan import LifespanManager

from loopwise.service.accounts.emails import account_job_handlers, enqueue_password_reset
from loopwise.service.app import create_app
from loopwise.service.jobs.worker import Worker
from loopwise.service.settings import Settings, load_settings

__all__ = ["ResetLatency", "TimingComparison", "measure_reset_latency", "measure_timing"]


@dataclass
class _Sink:
    """aiosmtpd handler: wait ``delay``, accept, note when each recipient's mail arrived."""

    delay: float
    busy_after: int
    arrivals: dict[str, float] = field(default_factory=dict)
    count: int = 0
    busy: asyncio.Event = field(default_factory=asyncio.Event)
    reset_arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(self.delay)
        self.count += 1
        if self.count >= self.busy_after:
            self.busy.set()
        for rcpt in envelope.rcpt_tos:
            self.arrivals[rcpt] = time.perf_counter()
            if rcpt == _RESET_TO:
                self.reset_arrived.set()
        return "250 accepted"


_RESET_TO = "forgot@bench.example.com"


@dataclass(frozen=True)
class ResetLatency:
    backlog: int
    concurrency: int
    smtp_delay: float
    latency: float  # seconds from enqueue to the sink accepting the reset email
    welcome_sent_before: int  # welcome emails accepted in that time
    welcome_still_queued: int


def _settings(dsn: str, data_dir: Path, **overrides: object) -> Settings:
    return load_settings(
        database_url=dsn,
        data_dir=data_dir,
        log_level="warning",
        argon2_time_cost=1,
        argon2_memory_kib=64,
        argon2_parallelism=1,
        _env_file=None,
        **overrides,
    )


async def measure_reset_latency(
    dsn: str, data_dir: Path, *, backlog: int = 10_000, smtp_delay: float = 0.01
) -> ResetLatency:
    sink = _Sink(smtp_delay, busy_after=min(50, max(1, backlog // 10)))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(sink, hostname="sink"), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = _settings(dsn, data_dir, smtp_host="127.0.0.1", smtp_port=port, smtp_tls="none")
    try:
        async with asyncpg.create_pool(dsn, min_size=2, max_size=8) as pool:
            await pool.execute(
                "INSERT INTO users (email, display_name, password_hash, email_verified_at) "
                "VALUES ($1, 'Forgetful', 'x', now())",
                _RESET_TO,
            )
            await pool.execute(
                "INSERT INTO jobs (kind, payload, max_attempts) "
                "SELECT 'email.welcome', jsonb_build_object("
                "'email', 'user' || g || '@bench.example.com', 'name', 'User ' || g), 3 "
                "FROM generate_series(1, $1) g",
                backlog,
            )
            handlers = account_job_handlers(settings, pool)
            async with Worker.from_settings(settings, pool, handlers, dsn):
                await sink.busy.wait()  # the worker is draining the backlog: steady state
                sent_at_start = sink.count
                async with pool.acquire() as conn:
                    started = time.perf_counter()
                    await enqueue_password_reset(conn, email=_RESET_TO, max_attempts=3)
                async with asyncio.timeout(600):
                    await sink.reset_arrived.wait()
                latency = sink.arrivals[_RESET_TO] - started
                sent_before = sink.count - 1 - sent_at_start
                queued = await pool.fetchval(
                    "SELECT count(*) FROM jobs WHERE kind = 'email.welcome' AND state = 'queued'"
                )
    finally:
        server.close()
        await server.wait_closed()
    return ResetLatency(
        backlog, settings.jobs_concurrency, smtp_delay, latency, sent_before, queued
    )


@dataclass(frozen=True)
class TimingComparison:
    rounds: int
    known: list[float]
    unknown: list[float]

    @staticmethod
    def summary(samples: list[float]) -> str:
        ordered = sorted(samples)
        q = statistics.quantiles(ordered, n=100)
        return (
            f"median {statistics.median(ordered) * 1000:.2f} ms, "
            f"p90 {q[89] * 1000:.2f} ms, p99 {q[98] * 1000:.2f} ms, "
            f"mean {statistics.fmean(ordered) * 1000:.2f} ms"
        )


async def measure_timing(
    dsn: str, data_dir: Path, *, rounds: int = 900, worker: bool = True
) -> TimingComparison:
    settings = _settings(
        dsn,
        data_dir,
        jobs_in_process=worker,
        password_reset_max_per_email=1000,
        password_reset_max_per_client=100_000,
    )
    app = create_app(settings)
    known: list[float] = []
    unknown: list[float] = []
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            body = {
                "email": "known@bench.example.com",
                "password": "correct horse",
                "display_name": "K",
            }
            assert (await client.post("/register", json=body)).status_code == 201
            for n in range(rounds + 20):
                # Alternate, and swap which goes first each round, so drift hits both alike.
                order = [("known", known), ("unknown", unknown)]
                if n % 2:
                    order.reverse()
                for kind, samples in order:
                    email = f"{kind}@bench.example.com"
                    started = time.perf_counter()
                    response = await client.post("/password-reset", json={"email": email})
                    elapsed = time.perf_counter() - started
                    assert response.status_code == 202, response.text
                    if n >= 20:  # the first rounds warm caches and prepared statements
                        samples.append(elapsed)
    return TimingComparison(rounds, known, unknown)
