"""The job worker: claims jobs from PostgreSQL and runs them, a bounded number at a time.

    async with Worker(pool, handlers, dsn=dsn, concurrency=4) as worker:
        await stop_requested.wait()
    # leaving the block: stop claiming, let running jobs finish within `grace`, give the
    # rest back to the queue; nothing unfinished is marked done.

Wake-ups come from LISTEN on a dedicated connection; a poll every ``poll_interval`` covers
lost notifications, a dropped listener and jobs scheduled for later, so a missed NOTIFY
only delays a job. Every running job holds a lease that one renewal task extends for all
of them; a job whose lease was taken over (this process stalled past it) is cancelled
here, and its late result is refused by the fence anyway. Any number of workers, in any
number of processes, share one queue: PostgreSQL row locks are the only coordination.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Self, TypeVar

import asyncpg

from loopwise.patterns.deadlines import deadline
from loopwise.patterns.exceptions import DeadlineExceeded
from loopwise.patterns.lifecycle import AsyncResource, ResourceState
from loopwise.service.jobs import queue
from loopwise.service.jobs.admin import prune_finished
from loopwise.service.jobs.queue import Job, JobState
from loopwise.service.listener import PgListener
from loopwise.service.logs import get_logger
from loopwise.service.settings import Settings

__all__ = ["ClosedWorker", "PermanentJobError", "Worker", "WorkerStats"]

Handler = Callable[[Job], Awaitable[None]]
R = TypeVar("R")

_log = get_logger("loopwise.jobs")


class PermanentJobError(Exception):
    """Raised by a handler when retrying cannot help: the job goes dead at once."""


class ClosedWorker(RuntimeError):
    """The worker was started twice, or used after it was closed."""


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
        self._concurrency, self._lease, self._job_timeout = concurrency, lease, job_timeout
        self._poll, self._grace = poll_interval, grace
        self._backoff = (backoff_base, backoff_max)
        self._prune_after, self._prune_every = prune_after, prune_every
        self._state = ResourceState.UNOPENED
        self._stopping = False
        self._wake = asyncio.Event()
        self._running: dict[asyncio.Task[None], Job] = {}
        self._lost: set[int] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._tg = asyncio.TaskGroup()
        self._claimer: asyncio.Task[None] | None = None
        self._services: list[asyncio.Task[None]] = []
        self._listener: PgListener | None = None
        self._counts = dict.fromkeys(("completed", "retried", "dead", "lost", "released"), 0)

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
        c = self._counts
        return WorkerStats(
            len(self._running), c["completed"], c["retried"], c["dead"], c["lost"], c["released"]
        )

    async def __aenter__(self) -> Self:
        if self._state is not ResourceState.UNOPENED:
            raise ClosedWorker("Cannot restart a worker once it has been started or closed.")
        self._state = ResourceState.OPENED
        await self._tg.__aenter__()
        self._claimer = self._tg.create_task(self._claim_loop(), name="jobs-claim")
        self._services = [
            self._tg.create_task(self._renew_loop(), name="jobs-renew"),
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
            await self._listener.__aenter__()
        _log.info("worker_started", owner=self.owner, concurrency=self._concurrency)
        return self

    async def aclose(self) -> None:
        """Stop claiming, give running jobs ``grace`` seconds, release the rest. Idempotent."""
        if self._state is not ResourceState.OPENED:
            self._state = ResourceState.CLOSED
            return
        self._state = ResourceState.CLOSED
        try:
            self._stopping = True
            self._wake.set()
            if self._claimer is not None:
                # Not cancelled: a claim cut off mid-query could take jobs nobody runs.
                await self._claimer
            if self._running:
                _log.info("worker_draining", running=len(self._running), grace=self._grace)
                await asyncio.wait(list(self._running), timeout=self._grace)
            for task in list(self._running):
                task.cancel()  # each releases its job as it unwinds
            if self._running:
                await asyncio.wait(list(self._running))
            if self._listener is not None:
                await self._listener.aclose()
            for service in self._services:
                service.cancel()
            for timer in self._timers:
                timer.cancel()
        finally:
            await self._tg.__aexit__(None, None, None)
            _log.info("worker_stopped", owner=self.owner, **self._counts)

    # The claim loop: one claim for as many jobs as there are free slots, then wait for a
    # notification, a finished job, or the poll interval.
    async def _claim_loop(self) -> None:
        kinds = list(self._handlers)
        while not self._stopping:
            self._wake.clear()
            free = self._concurrency - len(self._running)
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
                    task = self._tg.create_task(self._run(job), name=f"job-{job.id}")
                    self._running[task] = job
                if jobs and len(jobs) == free:
                    continue  # there may be more; the next pass waits for a free slot
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()

    async def _run(self, job: Job) -> None:
        task = asyncio.current_task()
        try:
            await self._attempt(job)
        except asyncio.CancelledError:
            if job.id not in self._lost:
                # Shutting down past the grace: hand the job back now rather than at lease
                # expiry. Never marked done: it may not have finished.
                await self._record(queue.release, job, "released: worker stopped mid-run")
                self._counts["released"] += 1
            raise
        finally:
            if task is not None:
                self._running.pop(task, None)
            self._lost.discard(job.id)
            self._wake.set()

    async def _attempt(self, job: Job) -> None:
        log = _log.bind(job_id=job.id, kind=job.kind, attempt=job.attempt)
        try:
            async with deadline(self._job_timeout):
                await self._handlers[job.kind](job)
        except PermanentJobError as exc:
            outcome = await self._record(queue.fail, job, str(exc), retry_in=None)
            error = str(exc)
        except Exception as exc:  # any failure of a job is recorded, never raised
            detail = f"timed out: {exc}" if isinstance(exc, DeadlineExceeded) else f"{exc!r}"
            delay = queue.backoff_delay(job.attempt, base=self._backoff[0], cap=self._backoff[1])
            outcome = await self._record(queue.fail, job, detail, retry_in=delay)
            error = detail
            if outcome is JobState.QUEUED:
                self._wake_after(delay)
        else:
            done = await self._record(queue.complete, job)
            if done:
                self._counts["completed"] += 1
                log.info("job_done")
            else:
                log.warning("job_done_but_lease_lost")
            return
        if outcome is JobState.QUEUED:
            self._counts["retried"] += 1
            log.warning("job_retry", error=error)
        elif outcome is JobState.DEAD:
            self._counts["dead"] += 1
            log.error("job_dead", error=error)
        else:
            log.warning("job_failed_but_lease_lost", error=error)

    async def _record(
        self, write: Callable[..., Awaitable[R]], job: Job, *args: object, **kwargs: object
    ) -> R | None:
        """Write a job's outcome; on a database error leave it to lease expiry."""
        try:
            async with asyncio.timeout(self._lease / 2):
                async with self._pool.acquire() as conn:
                    return await write(conn, job, *args, **kwargs)
        except Exception as exc:  # never let one job's bookkeeping take the worker down
            _log.error("job_result_not_recorded", job_id=job.id, error=repr(exc))
            return None

    def _wake_after(self, delay: float) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            self._wake.set()

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            held = list(self._running.items())
            if not held:
                continue
            try:
                async with self._pool.acquire() as conn:
                    kept = await queue.renew_leases(conn, [j for _, j in held], lease=self._lease)
            except Exception as exc:  # retried next tick, well within the lease
                _log.warning("lease_renewal_failed", error=repr(exc))
                continue
            for task, job in held:
                if job.id not in kept and not task.done():
                    # Another worker may run it now: stop ours; its result would be refused.
                    self._lost.add(job.id)
                    self._counts["lost"] += 1
                    _log.warning("lease_lost", job_id=job.id, attempt=job.attempt)
                    task.cancel()

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
