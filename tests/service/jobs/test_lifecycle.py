"""The job lifecycle as a state machine, checked step by step against the real database.

Rules are what workers and time do: enqueue, claim, complete, fail, crash (a worker
vanishes holding its jobs), expire (time passes a lease) and reclaim. A model tracks what
each job's state must be; after every step the database must agree, no job may be lost,
and no attempt (the fencing token) may ever be handed to two holders.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from loopwise.service.jobs import queue
from loopwise.service.jobs.queue import Job

T = TypeVar("T")
KIND = "test.lifecycle"
MAX_ATTEMPTS = 3
WORKERS = ("w0", "w1", "w2")


@dataclass
class _Model:
    state: str = "queued"
    attempts: int = 0
    expired: bool = False


@dataclass
class _Holder:
    worker: str
    job: Job
    crashed: bool = False


class JobLifecycle(RuleBasedStateMachine):
    def __init__(self, dsn: str) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.conn: asyncpg.Connection = self.run(asyncpg.connect(dsn))
        self.run(self.conn.execute("TRUNCATE jobs RESTART IDENTITY"))
        self.jobs: dict[int, _Model] = {}
        self.holders: list[_Holder] = []
        self.issued: set[tuple[int, int]] = set()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.conn.close())
        self.loop.close()

    @initialize()
    def two_jobs(self) -> None:
        for _ in range(2):
            self.enqueue()

    @rule()
    def enqueue(self) -> None:
        job_id = self.run(queue.enqueue(self.conn, KIND, {}, max_attempts=MAX_ATTEMPTS))
        self.jobs[job_id] = _Model()

    @rule(worker=st.sampled_from(WORKERS), limit=st.integers(1, 3))
    def claim(self, worker: str, limit: int) -> None:
        claimed = self.run(
            queue.claim(self.conn, kinds=[KIND], limit=limit, lease=60, owner=worker)
        )
        runnable = [i for i, m in self.jobs.items() if m.state == "queued"]
        assert len(claimed) == min(limit, len(runnable))
        for job in claimed:
            model = self.jobs[job.id]
            assert model.state == "queued", "claimed a job that was not runnable"
            assert job.attempt == model.attempts + 1
            assert (job.id, job.attempt) not in self.issued, "one attempt handed out twice"
            self.issued.add((job.id, job.attempt))
            model.state, model.attempts, model.expired = "running", job.attempt, False
            self.holders.append(_Holder(worker, job))

    def _current(self, holder: _Holder) -> bool:
        model = self.jobs[holder.job.id]
        return model.state == "running" and model.attempts == holder.job.attempt

    @precondition(lambda self: any(not h.crashed for h in self.holders))
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        holder = data.draw(st.sampled_from([h for h in self.holders if not h.crashed]))
        self.holders.remove(holder)
        expected = self._current(holder)
        assert self.run(queue.complete(self.conn, holder.job)) is expected
        if expected:
            self.jobs[holder.job.id].state = "done"

    @precondition(lambda self: any(not h.crashed for h in self.holders))
    @rule(data=st.data(), permanent=st.booleans())
    def fail(self, data: st.DataObject, permanent: bool) -> None:
        holder = data.draw(st.sampled_from([h for h in self.holders if not h.crashed]))
        self.holders.remove(holder)
        expected = self._current(holder)
        outcome = self.run(
            queue.fail(self.conn, holder.job, "boom", retry_in=None if permanent else 0.0)
        )
        if not expected:
            assert outcome is None, "a stale attempt changed a job"
            return
        model = self.jobs[holder.job.id]
        model.state = "dead" if permanent or model.attempts >= MAX_ATTEMPTS else "queued"
        assert outcome == model.state

    @rule(worker=st.sampled_from(WORKERS))
    def crash(self, worker: str) -> None:
        """The worker vanishes: its leases stay until they expire; it may yet wake up."""
        for holder in self.holders:
            if holder.worker == worker:
                holder.crashed = True

    @precondition(lambda self: any(h.crashed for h in self.holders))
    @rule(data=st.data())
    def zombie_writes(self, data: st.DataObject) -> None:
        """A crashed worker wakes up and reports: refused unless nobody took its job."""
        holder = data.draw(st.sampled_from([h for h in self.holders if h.crashed]))
        self.holders.remove(holder)
        expected = self._current(holder)
        assert self.run(queue.complete(self.conn, holder.job)) is expected
        if expected:
            self.jobs[holder.job.id].state = "done"

    @precondition(lambda self: any(m.state == "running" for m in self.jobs.values()))
    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        """Time passes one running job's lease (the clock is PostgreSQL's; we move the lease)."""
        running = sorted(i for i, m in self.jobs.items() if m.state == "running")
        job_id = data.draw(st.sampled_from(running))
        self.run(
            self.conn.execute(
                "UPDATE jobs SET lease_until = now() - interval '1 second' WHERE id = $1", job_id
            )
        )
        self.jobs[job_id].expired = True

    @precondition(lambda self: any(m.state == "running" for m in self.jobs.values()))
    @rule(data=st.data(), worker=st.sampled_from(WORKERS))
    def takeover(self, data: st.DataObject, worker: str) -> None:
        """A holder stalls past its lease; the job is reclaimed and another worker claims it."""
        self.expire(data)
        self.reclaim()
        if any(m.state == "queued" for m in self.jobs.values()):
            self.claim(worker, 3)

    @rule()
    def reclaim(self) -> None:
        expected = [i for i, m in self.jobs.items() if m.state == "running" and m.expired]
        assert self.run(queue.reclaim_expired(self.conn)) == len(expected)
        for job_id in expected:
            model = self.jobs[job_id]
            model.state = "dead" if model.attempts >= MAX_ATTEMPTS else "queued"

    @invariant()
    def database_agrees(self) -> None:
        rows = self.run(self.conn.fetch("SELECT id, state, attempts, lease_until FROM jobs"))
        assert {r["id"]: (r["state"], r["attempts"]) for r in rows} == {
            i: (m.state, m.attempts) for i, m in self.jobs.items()
        }, "a job was lost, or its state is not what the transitions say"

    @invariant()
    def at_most_one_live_lease(self) -> None:
        for job_id, model in self.jobs.items():
            live = [h for h in self.holders if h.job.id == job_id and self._current(h)]
            assert len(live) <= (1 if model.state == "running" else 0)


def test_job_lifecycle(database_url: str) -> None:
    """Under any sequence of claims, results, crashes and expiries no job is lost or shared."""
    run_state_machine_as_test(
        # hypothesis accepts any factory here; its stubs ask for the class itself.
        lambda: JobLifecycle(database_url),  # type: ignore[arg-type]
        settings=settings(
            max_examples=50,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
