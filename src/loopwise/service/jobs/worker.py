"""The job worker: claims jobs from PostgreSQL and runs them, a bounded number at a time.

    async with Worker(pool, handlers, dsn=dsn, concurrency=4) as worker:
        await stop_requested.wait()
    # leaving the block: stop claiming, let running jobs finish within `grace`, give the
    # rest back to the queue; nothing unfinished is marked done.

Wake-ups come from LISTEN on a dedicated connection; a poll every ``poll_interval`` covers
lost notifications, a dropped listener and jobs scheduled for later, so a missed NOTIFY
only delays a job. Claimed jobs run under deadlines and leases in ``running.py``. Any
number of workers, in any number of processes, share one queue: PostgreSQL row locks are
the only coordination.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg

from loopwise.patterns.lifecycle import AsyncResource
from loopwise.service.jobs import queue
from loopwise.service.jobs.admin import prune_finished
from loopwise.service.jobs.queue import Job
from loopwise.service.jobs.running import Handler, RunningJobs
from loopwise.service.listener import PgListener
from loopwise.service.logs import get_logger
from loopwise.service.settings import Settings

__all__ = ["Worker", "WorkerStats"]

_log = get_logger("loopwise.jobs")


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """Counters since start, and what runs now: for logs and metrics."""

    running: int
    completed: int
    retried: int
    dead: int
    lost_leases: int
    released: int


class Worker(AsyncResource):
    """Runs jobs of the kinds in ``handlers`` under leases, timeouts and bounded concurrency.

    Args:
        pool: where claims and results are written.
        handlers: job kind → coroutine function taking the :class:`Job`.
        dsn: for the dedicated LISTEN connection; None polls only.
        concurrency: jobs run at once by this worker.
        lease: seconds a claim holds a job; renewed every third of it while the job runs.
        job_timeout: seconds one attempt may take before it is cancelled and retried.
        poll_interval: the longest a runnable job waits when a notification was lost.
        grace: seconds running jobs get to finish when the worker stops.
        backoff_base, backoff_max: the exponential retry delay (see ``backoff_delay``).
        prune_after: delete done jobs older than this many seconds; None never prunes.
        prune_every: seconds between prunes.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        handlers: Mapping[str, Handler],
        *,
        dsn: str | None = None,
        concurrency: int = 4,
        lease: float = 30.0,
        job_timeout: float = 60.0,
        poll_interval: float = 5.0,
        grace: float = 10.0,
        backoff_base: float = 2.0,
        backoff_max: float = 600.0,
        prune_after: float | None = None,
        prune_every: float = 3600.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"`concurrency` must be at least 1, got {concurrency}")
        if not handlers:
            raise ValueError("`handlers` must name at least one job kind")
        for name, value in (("lease", lease), ("job_timeout", job_timeout)):
            if value <= 0:
                raise ValueError(f"`{name}` must be positive, got {value}")
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._pool, self._handlers, self._dsn = pool, dict(handlers), dsn
        self._concurrency, self._lease = concurrency, lease
        self._poll, self._grace = poll_interval, grace
        self._prune_after, self._prune_every = prune_after, prune_every
        self._stopping = False
        self._wake = asyncio.Event()
        self._tg = asyncio.TaskGroup()
        self._jobs = RunningJobs(
            pool,
            self._handlers,
            self._tg,
            self._wake,
            lease=lease,
            job_timeout=job_timeout,
            backoff=(backoff_base, backoff_max),
        )
        self._claimer: asyncio.Task[None] | None = None
        self._services: list[asyncio.Task[None]] = []
        self._listener: PgListener | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, pool: asyncpg.Pool, handlers: Mapping[str, Handler], dsn: str
    ) -> Worker:
        return cls(
            pool,
            handlers,
            dsn=dsn,
            concurrency=settings.jobs_concurrency,
            lease=settings.jobs_lease,
            job_timeout=settings.jobs_timeout,
            poll_interval=settings.jobs_poll_interval,
            grace=settings.shutdown_grace,
            backoff_base=settings.jobs_backoff_base,
            backoff_max=settings.jobs_backoff_max,
            prune_after=settings.jobs_prune_after,
            prune_every=settings.jobs_prune_every,
        )

    def stats(self) -> WorkerStats:
        c = self._jobs.counts
        return WorkerStats(
            len(self._jobs.running),
            c["completed"],
            c["retried"],
            c["dead"],
            c["lost"],
            c["released"],
        )

    @property
    def resource_name(self) -> str:
        return "job worker"

    async def _aopen(self) -> None:
        await self._tg.__aenter__()
        self._claimer = self._tg.create_task(self._claim_loop(), name="jobs-claim")
        self._services = [
            self._tg.create_task(self._jobs.renew_leases(), name="jobs-renew"),
            self._tg.create_task(self._maintain_loop(), name="jobs-maintain"),
        ]
        if self._dsn is not None:
            # Any notification, and every (re)connect, wakes the claim loop: whatever was
            # announced while not listening is then picked up by the claim it triggers.
            self._listener = PgListener(
                self._dsn,
                [queue.CHANNEL],
                on_notify=lambda _channel, _payload: self._wake.set(),
                on_listening=self._wake.set,
                name="jobs",
                retry_interval=self._poll,
            )
            await self._listener.open()
        _log.info("worker_started", owner=self.owner, concurrency=self._concurrency)

    async def _aclose(self) -> None:
        """Stop claiming, give running jobs ``grace`` seconds, release the rest."""
        try:
            self._stopping = True
            self._wake.set()
            if self._claimer is not None:
                # Not cancelled: a claim cut off mid-query could take jobs nobody runs.
                await self._claimer
            running = self._jobs.running
            if running:
                _log.info("worker_draining", running=len(running), grace=self._grace)
                await asyncio.wait(list(running), timeout=self._grace)
            for task in list(running):
                task.cancel()  # each releases its job as it unwinds
            if running:
                await asyncio.wait(list(running))
            if self._listener is not None:
                await self._listener.aclose()
            for service in self._services:
                service.cancel()
            self._jobs.cancel_timers()
        finally:
            await self._tg.__aexit__(None, None, None)
            _log.info("worker_stopped", owner=self.owner, **self._jobs.counts)

    # The claim loop: one claim for as many jobs as there are free slots, then wait for a
    # notification, a finished job, or the poll interval.
    async def _claim_loop(self) -> None:
        kinds = list(self._handlers)
        while not self._stopping:
            self._wake.clear()
            free = self._concurrency - len(self._jobs.running)
            jobs: list[Job] = []
            if free > 0:
                try:
                    async with self._pool.acquire() as conn:
                        jobs = await queue.claim(
                            conn, kinds=kinds, limit=free, lease=self._lease, owner=self.owner
                        )
                except Exception as exc:  # the next tick claims again
                    _log.warning("claim_failed", error=repr(exc))
                for job in jobs:
                    self._jobs.start(job)
                if jobs and len(jobs) == free:
                    continue  # there may be more; the next pass waits for a free slot
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()

    async def _maintain_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        while True:
            try:
                async with self._pool.acquire() as conn:
                    if await queue.reclaim_expired(conn):
                        self._wake.set()
                    if self._prune_after is not None and loop.time() >= next_prune:
                        next_prune = loop.time() + self._prune_every
                        pruned = await prune_finished(conn, older_than=self._prune_after)
                        if pruned:
                            _log.info("jobs_pruned", count=pruned)
            except Exception as exc:  # a bad tick must not stop the worker
                _log.warning("jobs_maintenance_failed", error=repr(exc))
            await asyncio.sleep(self._poll)
