"""The queue's transitions on the real PostgreSQL: outbox, claims, fences, retries, admin."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from loopwise.service.jobs import admin, queue
from loopwise.service.jobs.queue import CHANNEL, JobState
from tests.service.jobs.conftest import job_row

KINDS = ["test.job"]


async def _enqueue(conn: asyncpg.Connection | asyncpg.Pool, max_attempts: int = 3) -> int:
    async with conn.acquire() if isinstance(conn, asyncpg.Pool) else _same(conn) as c:
        return await queue.enqueue(c, "test.job", {"n": 1}, max_attempts=max_attempts)


class _same:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def __aenter__(self) -> asyncpg.Connection:
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        return None


async def _claim(pool: asyncpg.Pool, owner: str = "w1", limit: int = 1) -> list[queue.Job]:
    async with pool.acquire() as conn:
        return await queue.claim(conn, kinds=KINDS, limit=limit, lease=30, owner=owner)


async def test_enqueue_commits_with_the_transaction(database_url: str, pool: asyncpg.Pool) -> None:
    """A committed enqueue leaves one job and one NOTIFY; a rolled-back one leaves neither."""
    notes: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(CHANNEL, lambda *args: notes.put_nowait(args[3]))
    try:
        async with pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            await queue.enqueue(conn, "test.rolled_back", {}, max_attempts=1)
            await transaction.rollback()
            async with conn.transaction():
                kept = await queue.enqueue(conn, "test.job", {"a": [1, "b"]}, max_attempts=2)
        # Notifications arrive in commit order: the first is the committed job's.
        assert await notes.get() == "test.job"
        assert notes.empty()
        rows = await pool.fetch("SELECT id, kind, payload::text, state, max_attempts FROM jobs")
        assert [tuple(r) for r in rows] == [(kept, "test.job", '{"a": [1, "b"]}', "queued", 2)]
    finally:
        await listener.close()


async def test_enqueue_checks_its_arguments(pool: asyncpg.Pool) -> None:
    """Bad attempt budgets, delays and kinds are refused before anything is written."""
    async with pool.acquire() as conn:
        with pytest.raises(ValueError, match="`max_attempts` must be at least 1"):
            await queue.enqueue(conn, "test.job", {}, max_attempts=0)
        with pytest.raises(ValueError, match="`delay` must not be negative"):
            await queue.enqueue(conn, "test.job", {}, max_attempts=1, delay=-1)
        with pytest.raises(asyncpg.CheckViolationError):
            await queue.enqueue(conn, "Bad Kind!", {}, max_attempts=1)


async def test_claims_skip_locked_rows(pool: asyncpg.Pool) -> None:
    """Two claimers at once take different jobs: SKIP LOCKED, no waiting, no double claim."""
    first, second = await _enqueue(pool), await _enqueue(pool)
    async with pool.acquire() as a, a.transaction():
        mine = await queue.claim(a, kinds=KINDS, limit=1, lease=30, owner="a")
        theirs = await _claim(pool, owner="b", limit=5)  # while a's claim is uncommitted
    assert [j.id for j in mine] == [first]
    assert [j.id for j in theirs] == [second]
    assert await _claim(pool) == []


async def test_claim_respects_run_at_and_kinds(pool: asyncpg.Pool) -> None:
    """Jobs scheduled for later, and kinds this worker does not run, are not claimed."""
    async with pool.acquire() as conn:
        await queue.enqueue(conn, "test.job", {}, max_attempts=1, delay=3600)
        await queue.enqueue(conn, "other.kind", {}, max_attempts=1)
    assert await _claim(pool, limit=10) == []


async def test_complete_and_fail_are_fenced(pool: asyncpg.Pool) -> None:
    """A worker whose lease was taken over can neither complete nor fail the newer attempt."""
    job_id = await _enqueue(pool)
    [stale] = await _claim(pool, owner="slow")
    await pool.execute("UPDATE jobs SET lease_until = now() - interval '1 s' WHERE id = $1", job_id)
    async with pool.acquire() as conn:
        assert await queue.reclaim_expired(conn) == 1
    [fresh] = await _claim(pool, owner="fast")
    assert (stale.attempt, fresh.attempt) == (1, 2)
    async with pool.acquire() as conn:
        assert await queue.complete(conn, stale) is False
        assert await queue.fail(conn, stale, "late", retry_in=0) is None
        assert await queue.release(conn, stale, "late") is False
        assert await queue.renew_leases(conn, [stale, fresh], lease=30) == {job_id}
        assert await queue.complete(conn, fresh) is True
    row = await job_row(pool, job_id)
    assert (row["state"], row["attempts"], row["lease_owner"]) == ("done", 2, None)
    assert row["finished_at"] is not None


async def test_fail_retries_then_goes_dead(pool: asyncpg.Pool) -> None:
    """Failures requeue after the delay until attempts run out; dead keeps the last error."""
    job_id = await _enqueue(pool, max_attempts=2)
    [job] = await _claim(pool)
    async with pool.acquire() as conn:
        assert await queue.fail(conn, job, "first", retry_in=60) is JobState.QUEUED
    row = await job_row(pool, job_id)
    assert row["last_error"] == "first"
    assert await pool.fetchval("SELECT run_at > now() + interval '50 s' FROM jobs") is True
    assert await _claim(pool) == []  # not before its backoff
    await pool.execute("UPDATE jobs SET run_at = now()")
    [job] = await _claim(pool)
    async with pool.acquire() as conn:
        assert await queue.fail(conn, job, "second", retry_in=60) is JobState.DEAD
    row = await job_row(pool, job_id)
    assert (row["state"], row["attempts"], row["last_error"]) == ("dead", 2, "second")


async def test_permanent_failure_is_dead_at_once(pool: asyncpg.Pool) -> None:
    """``retry_in=None`` means retrying cannot help: dead on the first attempt."""
    job_id = await _enqueue(pool, max_attempts=5)
    [job] = await _claim(pool)
    async with pool.acquire() as conn:
        assert await queue.fail(conn, job, "no such mailbox", retry_in=None) is JobState.DEAD
    assert (await job_row(pool, job_id))["attempts"] == 1


async def test_expired_leases_are_reclaimed(pool: asyncpg.Pool) -> None:
    """An expired lease requeues its job, or buries it when that was the last attempt."""
    retried, buried = await _enqueue(pool, max_attempts=3), await _enqueue(pool, max_attempts=1)
    await _claim(pool, limit=2)
    async with pool.acquire() as conn:
        assert await queue.reclaim_expired(conn) == 0  # leases still valid
        await conn.execute("UPDATE jobs SET lease_until = now() - interval '1 s'")
        assert await queue.reclaim_expired(conn) == 2
    again, dead = await job_row(pool, retried), await job_row(pool, buried)
    assert (again["state"], dead["state"]) == ("queued", "dead")
    assert "lease expired: worker w1" in again["last_error"]


async def test_release_hands_a_job_back(pool: asyncpg.Pool) -> None:
    """A released job is runnable at once and keeps its attempt count (the fence only grows)."""
    job_id = await _enqueue(pool)
    [job] = await _claim(pool)
    async with pool.acquire() as conn:
        assert await queue.release(conn, job, "stopping") is True
    [again] = await _claim(pool)
    assert (again.id, again.attempt) == (job_id, 2)


def test_backoff_grows_with_jitter_and_a_cap() -> None:
    """Delays double per attempt, stay within [half, full] of the step, and never pass the cap."""
    low = [queue.backoff_delay(n, base=1, cap=10, rand=lambda: 0.0) for n in range(1, 7)]
    high = [queue.backoff_delay(n, base=1, cap=10, rand=lambda: 1.0) for n in range(1, 7)]
    assert low == [0.5, 1, 2, 4, 5, 5]
    assert high == [1, 2, 4, 8, 10, 10]
    assert queue.backoff_delay(10_000, base=1, cap=10) <= 10
    with pytest.raises(ValueError, match="`attempt` must be at least 1"):
        queue.backoff_delay(0, base=1, cap=10)


async def test_operators_count_retry_and_discard(pool: asyncpg.Pool) -> None:
    """Counts cover every state; dead jobs list their error; retry and discard act on them."""
    assert await admin.count_by_state(pool) == {"queued": 0, "running": 0, "done": 0, "dead": 0}
    ids = [await _enqueue(pool, max_attempts=1) for _ in range(3)]
    for job in await _claim(pool, limit=3):
        async with pool.acquire() as conn:
            await queue.fail(conn, job, f"boom {job.id}", retry_in=0)
    async with pool.acquire() as conn:
        dead = await admin.list_dead(conn, limit=10)
        assert {(d.id, d.last_error) for d in dead} == {(i, f"boom {i}") for i in ids}
        assert await admin.retry_dead(conn, [ids[0]], attempts=2) == 1
        assert await admin.discard_dead(conn, [ids[1]]) == 1
        assert await admin.count_by_state(conn) == {"queued": 1, "running": 0, "done": 0, "dead": 1}
        assert await admin.retry_dead(conn, None, attempts=1) == 1
        assert await admin.discard_dead(conn, None) == 0
        with pytest.raises(ValueError, match="`attempts` must be at least 1"):
            await admin.retry_dead(conn, None, attempts=0)
    # The retried job keeps its attempt count (the fence) and gains a fresh budget.
    [job] = await _claim(pool)
    assert (job.id, job.attempt, job.max_attempts) == (ids[0], 2, 3)


async def test_prune_deletes_only_old_done_jobs(pool: asyncpg.Pool) -> None:
    """Pruning removes done jobs past the age in batches; recent and dead jobs stay."""
    for _ in range(5):
        await _enqueue(pool)
    await pool.execute(
        """UPDATE jobs SET state = 'done', finished_at = now() - interval '2 days'
           WHERE id <= 3"""
    )
    await pool.execute("UPDATE jobs SET state = 'dead', finished_at = now() - interval '9 days'")
    await pool.execute("UPDATE jobs SET state = 'done' WHERE id <= 3")
    await pool.execute("UPDATE jobs SET finished_at = now() WHERE id = 3")
    async with pool.acquire() as conn:
        assert await admin.prune_finished(conn, older_than=86400, batch=1) == 2
    assert await pool.fetchval("SELECT array_agg(id ORDER BY id) FROM jobs") == [3, 4, 5]


async def test_higher_priority_is_claimed_first(pool: asyncpg.Pool) -> None:
    """A job queued behind a backlog but with a higher priority is the next one claimed."""
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO jobs (kind, payload, max_attempts) "
            "SELECT 'test.job', jsonb_build_object('n', g), 3 FROM generate_series(1, 500) g"
        )
        urgent = await queue.enqueue(conn, "test.job", {"n": 0}, max_attempts=3, priority=10)
        later = await queue.enqueue(conn, "test.job", {"n": -1}, max_attempts=3, priority=5)
    claimed = await _claim(pool, limit=3)
    assert [job.id for job in claimed[:2]] == [urgent, later]
    assert claimed[2].payload == {"n": 1}  # then the backlog, oldest first


async def test_priority_out_of_range_is_refused(pool: asyncpg.Pool) -> None:
    """Priorities outside -100..100 are a programming error, named as such."""
    async with pool.acquire() as conn:
        with pytest.raises(ValueError, match="`priority`"):
            await queue.enqueue(conn, "test.job", {}, max_attempts=1, priority=1000)
