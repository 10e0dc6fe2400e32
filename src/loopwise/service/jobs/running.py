"""The jobs one worker is running: each in its own task, under a deadline and a lease.

Each attempt's outcome is written back: done, queued again after a backoff, or dead. Every
running job holds a lease that one renewal task extends for all of them; a job whose lease
was taken over (this process stalled past it) is cancelled here, and its late result is
refused by the fence anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from loopwise.patterns.deadlines import fail_after
from loopwise.patterns.exceptions import DeadlineExceeded
from loopwise.service.jobs import queue
from loopwise.service.jobs.queue import Job, JobState
from loopwise.service.logs import get_logger
from loopwise.service.tracing import job_context

__all__ = ["Handler", "PermanentJobError", "RunningJobs"]

Handler = Callable[[Job], Awaitable[None]]
R = TypeVar("R")

_log = get_logger("loopwise.jobs")
_tracer = trace.get_tracer("loopwise.jobs")


class PermanentJobError(Exception):
    """Raised by a handler when retrying cannot help: the job goes dead at once."""


class RunningJobs:
    """Runs claimed jobs in tasks of ``tg``; counts what became of them.

    Args:
        pool: where results and lease renewals are written.
        handlers: job kind → coroutine function taking the :class:`Job`.
        tg: the worker's task group, which owns every job's task.
        wake: set whenever the worker should look for jobs to claim again.
        lease: seconds a claim holds a job; renewed every third of it while the job runs.
        job_timeout: seconds one attempt may take before it is cancelled and retried.
        backoff: the exponential retry delay's base and cap (see ``backoff_delay``).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        handlers: dict[str, Handler],
        tg: asyncio.TaskGroup,
        wake: asyncio.Event,
        *,
        lease: float,
        job_timeout: float,
        backoff: tuple[float, float],
    ) -> None:
        self._pool, self._handlers, self._tg, self._wake = pool, handlers, tg, wake
        self._lease, self._job_timeout, self._backoff = lease, job_timeout, backoff
        self.running: dict[asyncio.Task[None], Job] = {}
        self.counts = dict.fromkeys(("completed", "retried", "dead", "lost", "released"), 0)
        self._lost: set[int] = set()
        self._timers: set[asyncio.TimerHandle] = set()

    def start(self, job: Job) -> None:
        task = self._tg.create_task(self._run(job), name=f"job-{job.id}")
        self.running[task] = job

    def cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()

    async def _run(self, job: Job) -> None:
        task = asyncio.current_task()
        try:
            await self._attempt(job)
        except asyncio.CancelledError:
            if job.id not in self._lost:
                # Shutting down past the grace: hand the job back now rather than at lease
                # expiry. Never marked done: it may not have finished.
                await self._record(queue.release, job, "released: worker stopped mid-run")
                self.counts["released"] += 1
            raise
        finally:
            if task is not None:
                self.running.pop(task, None)
            self._lost.discard(job.id)
            self._wake.set()

    async def _attempt(self, job: Job) -> None:
        # In the trace of the request that queued the job, whichever process runs it.
        with _tracer.start_as_current_span(
            f"job {job.kind}",
            job_context(job.traceparent),
            SpanKind.CONSUMER,
            {"loopwise.job.id": job.id, "loopwise.job.attempt": job.attempt},
        ) as span:
            outcome = await self._attempt_in_span(job)
            span.set_attribute("loopwise.job.outcome", outcome)
            if outcome != "done":
                span.set_status(StatusCode.ERROR)

    async def _attempt_in_span(self, job: Job) -> str:
        log = _log.bind(job_id=job.id, kind=job.kind, attempt=job.attempt)
        try:
            async with fail_after(self._job_timeout):
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
                self.counts["completed"] += 1
                log.info("job_done")
                return "done"
            log.warning("job_done_but_lease_lost")
            return "lease_lost"
        if outcome is JobState.QUEUED:
            self.counts["retried"] += 1
            log.warning("job_retry", error=error)
            return "retry"
        if outcome is JobState.DEAD:
            self.counts["dead"] += 1
            log.error("job_dead", error=error)
            return "dead"
        log.warning("job_failed_but_lease_lost", error=error)
        return "lease_lost"

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

    async def renew_leases(self) -> None:
        """Extend every running job's lease each third of it, until cancelled."""
        while True:
            await asyncio.sleep(self._lease / 3)
            held = list(self.running.items())
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
                    self.counts["lost"] += 1
                    _log.warning("lease_lost", job_id=job.id, attempt=job.attempt)
                    task.cancel()
