"""The job queue's state transitions, each one SQL statement on a connection you hand in.

    queued ──claim──▶ running ──complete──▶ done
      ▲                  │
      └──fail (retry)────┤──fail (no attempts left, or permanent)──▶ dead
      └──lease expired───┘   (reclaim_expired; dead too when no attempts are left)

``enqueue`` runs on the caller's connection, so inside the caller's transaction: the job
commits or rolls back with the row that caused it (a transactional outbox), and its NOTIFY
is delivered only on commit. Every transition out of ``running`` names the attempt it
holds (``Job.attempt``, the fencing token): a worker whose lease expired and was taken over
changes nothing, because the row's ``attempts`` has moved on.
"""

from __future__ import annotations

import enum
import json
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from loopwise.service.tracing import current_traceparent

__all__ = [
    "CHANNEL",
    "Job",
    "JobState",
    "backoff_delay",
    "claim",
    "complete",
    "enqueue",
    "fail",
    "reclaim_expired",
    "release",
    "renew_leases",
]

# The LISTEN/NOTIFY channel new jobs are announced on; the payload is the job's kind.
CHANNEL = "loopwise_jobs"

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed job. ``attempt`` is this claim's fencing token (1 on the first run).

    ``traceparent`` is the W3C trace context of the request that queued it, if any.
    """

    id: int
    kind: str
    payload: Mapping[str, Any]
    attempt: int
    max_attempts: int
    traceparent: str | None = None


_ENQUEUE = """
WITH job AS (
    INSERT INTO jobs (kind, payload, max_attempts, run_at, priority, user_id, traceparent)
    VALUES ($1, $2::text::jsonb, $3, now() + make_interval(secs => $4), $6, $7, $8)
    RETURNING id
)
SELECT job.id, pg_notify($5, $1) FROM job
"""


async def enqueue(
    conn: Connection,
    kind: str,
    payload: Mapping[str, Any],
    *,
    max_attempts: int,
    delay: float = 0.0,
    priority: int = 0,
    user_id: int | None = None,
) -> int:
    """Insert a job on ``conn`` (in its transaction, if any) and announce it; return its id.

    Args:
        priority: runnable jobs are claimed highest first, then oldest first, so a
            message someone waits for (a password reset) overtakes a backlog of bulk ones.
        user_id: the account the job is about, so deleting the account cancels it.

    The job carries the trace context in force (``tracing.current_traceparent``), so
    its run joins the trace of the request that queued it.

    Raises:
        ValueError: ``max_attempts`` is below 1, ``delay`` is negative, or ``priority``
            is outside -100..100.
    """
    if not -100 <= priority <= 100:
        raise ValueError(f"`priority` must be within -100..100, got {priority}")
    if max_attempts < 1:
        raise ValueError(f"`max_attempts` must be at least 1, got {max_attempts}")
    if delay < 0:
        raise ValueError(f"`delay` must not be negative, got {delay}")
    # Passed as text: the query works whether or not the pool has a jsonb codec installed.
    row = await conn.fetchrow(
        _ENQUEUE,
        kind,
        json.dumps(payload),
        max_attempts,
        delay,
        CHANNEL,
        priority,
        user_id,
        current_traceparent(),
    )
    assert row is not None  # an INSERT … RETURNING always yields its row
    job_id: int = row["id"]
    return job_id


# SKIP LOCKED: concurrent claimers each take different rows instead of queueing on the
# same ones. The inner SELECT walks the partial index `jobs_runnable` in (priority DESC,
# run_at) order: a high-priority job is the first entry however long the backlog.
_CLAIM = """
WITH next AS (
    SELECT id FROM jobs
    WHERE state = 'queued' AND run_at <= now() AND kind = ANY($1::text[])
    ORDER BY priority DESC, run_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs AS j
SET state = 'running', attempts = j.attempts + 1, updated_at = now(),
    lease_until = now() + make_interval(secs => $3), lease_owner = $4
FROM next
WHERE j.id = next.id
RETURNING j.id, j.kind, j.payload::text AS payload, j.attempts, j.max_attempts,
    j.traceparent
"""


async def claim(
    conn: Connection, *, kinds: Collection[str], limit: int, lease: float, owner: str
) -> list[Job]:
    """Claim up to ``limit`` runnable jobs of ``kinds`` for ``lease`` seconds."""
    if limit < 1:
        return []
    rows = await conn.fetch(_CLAIM, list(kinds), limit, lease, owner)
    return [
        Job(
            id=row["id"],
            kind=row["kind"],
            payload=json.loads(row["payload"]),
            attempt=row["attempts"],
            max_attempts=row["max_attempts"],
            traceparent=row["traceparent"],
        )
        for row in rows
    ]


_RENEW = """
UPDATE jobs AS j
SET lease_until = now() + make_interval(secs => $3), updated_at = now()
FROM unnest($1::bigint[], $2::integer[]) AS held(id, attempt)
WHERE j.id = held.id AND j.attempts = held.attempt AND j.state = 'running'
RETURNING j.id
"""


async def renew_leases(conn: Connection, jobs: Sequence[Job], *, lease: float) -> set[int]:
    """Extend the leases still held on ``jobs``; return the ids whose lease was renewed."""
    if not jobs:
        return set()
    rows = await conn.fetch(_RENEW, [j.id for j in jobs], [j.attempt for j in jobs], lease)
    return {row["id"] for row in rows}


_COMPLETE = """
UPDATE jobs
SET state = 'done', finished_at = now(), updated_at = now(), lease_until = NULL,
    lease_owner = NULL
WHERE id = $1 AND attempts = $2 AND state = 'running'  -- the fence
"""


async def complete(conn: Connection, job: Job) -> bool:
    """Mark ``job`` done; False when this attempt no longer holds it (nothing changed)."""
    status: str = await conn.execute(_COMPLETE, job.id, job.attempt)
    return status == "UPDATE 1"


_FAIL = """
UPDATE jobs
SET state = CASE WHEN $3::float8 IS NULL OR attempts >= max_attempts
                 THEN 'dead' ELSE 'queued' END,
    run_at = CASE WHEN $3::float8 IS NULL OR attempts >= max_attempts
                  THEN run_at ELSE now() + make_interval(secs => $3::float8) END,
    finished_at = CASE WHEN $3::float8 IS NULL OR attempts >= max_attempts THEN now() END,
    last_error = $4, updated_at = now(), lease_until = NULL, lease_owner = NULL
WHERE id = $1 AND attempts = $2 AND state = 'running'  -- the fence
RETURNING state
"""


async def fail(
    conn: Connection, job: Job, error: str, *, retry_in: float | None
) -> JobState | None:
    """Record a failed attempt: requeue after ``retry_in`` seconds, or dead when ``None``.

    A job whose attempts are used up goes dead whatever ``retry_in`` says. Returns the new
    state, or None when this attempt no longer holds the job (nothing changed).
    """
    state: str | None = await conn.fetchval(_FAIL, job.id, job.attempt, retry_in, error[:2000])
    return None if state is None else JobState(state)


_RELEASE = """
UPDATE jobs
SET state = 'queued', run_at = now(), last_error = $3, updated_at = now(),
    lease_until = NULL, lease_owner = NULL
WHERE id = $1 AND attempts = $2 AND state = 'running'  -- the fence
"""


async def release(conn: Connection, job: Job, reason: str) -> bool:
    """Give an unfinished job back to the queue now (a stopping worker's courtesy).

    The attempt still counts: ``attempts`` only ever grows, which keeps the fence sound.
    """
    status: str = await conn.execute(_RELEASE, job.id, job.attempt, reason)
    return status == "UPDATE 1"


_RECLAIM = """
WITH expired AS (
    SELECT id FROM jobs
    WHERE state = 'running' AND lease_until < now()
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs AS j
SET state = CASE WHEN j.attempts >= j.max_attempts THEN 'dead' ELSE 'queued' END,
    finished_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
    run_at = now(), updated_at = now(), lease_until = NULL, lease_owner = NULL,
    last_error = 'lease expired: worker ' || j.lease_owner || ' stopped or stalled'
FROM expired
WHERE j.id = expired.id
RETURNING j.id
"""


async def reclaim_expired(conn: Connection) -> int:
    """Requeue jobs whose lease ran out (their worker died); return how many."""
    rows = await conn.fetch(_RECLAIM)
    return len(rows)


def backoff_delay(
    attempt: int, *, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retrying after failed attempt number ``attempt`` (1-based).

    Exponential (``base * 2**(attempt-1)``, at most ``cap``) with "equal jitter": half
    fixed, half random, so retries spread out but never come back immediately.

        backoff_delay(1, base=2, cap=600)   # 1..2 s
        backoff_delay(5, base=2, cap=600)   # 16..32 s
    """
    if attempt < 1:
        raise ValueError(f"`attempt` must be at least 1, got {attempt}")
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 64))
    return ceiling / 2 + rand() * ceiling / 2
