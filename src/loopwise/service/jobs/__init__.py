"""Durable background jobs on PostgreSQL, the email they send, and best-effort work.

enqueue_welcome_email(conn, ...)       # in the caller's transaction: the outbox
Worker(pool, job_handlers(settings))   # claims and runs jobs; any number, any process
count_by_state(pool)                   # the queue's depth, for metrics and operators
"""

from loopwise.service.jobs.admin import (
    DeadJob,
    QueueDepth,
    count_by_state,
    discard_dead,
    list_dead,
    prune_finished,
    retry_dead,
)
from loopwise.service.jobs.queue import CHANNEL, Job, JobState, enqueue
from loopwise.service.jobs.running import PermanentJobError
from loopwise.service.jobs.welcome import WELCOME_EMAIL, enqueue_welcome_email, job_handlers
from loopwise.service.jobs.worker import Worker, WorkerStats

__all__ = [
    "CHANNEL",
    "WELCOME_EMAIL",
    "DeadJob",
    "Job",
    "JobState",
    "PermanentJobError",
    "QueueDepth",
    "Worker",
    "WorkerStats",
    "count_by_state",
    "discard_dead",
    "enqueue",
    "enqueue_welcome_email",
    "job_handlers",
    "list_dead",
    "prune_finished",
    "retry_dead",
]
