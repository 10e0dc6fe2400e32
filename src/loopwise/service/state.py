"""What the app's lifespan owns and hands to every request (Starlette lifespan state)."""

from __future__ import annotations

from typing import TypedDict

from loopwise.patterns import BlockingPool, CpuPool, LoopWatchdog
from loopwise.service.accounts.downstreams import Downstreams
from loopwise.service.accounts.passwords import Passwords
from loopwise.service.accounts.session_cache import SessionCache
from loopwise.service.db import Database
from loopwise.service.http.drain import Drain
from loopwise.service.http.metrics import Metrics
from loopwise.service.jobs import BackgroundWork, Worker
from loopwise.service.settings import Settings

__all__ = ["AppState"]


class AppState(TypedDict):
    settings: Settings
    drain: Drain  # draining: /readyz answers 503 while the instance leaves rotation
    db: Database
    # The newest migration this code ships; /readyz compares the database against it.
    schema_revision: str | None
    # Off the loop (issue 6): blocking calls and CPU-bound work, the watchdog, metrics.
    blocking: BlockingPool
    cpu: CpuPool
    watchdog: LoopWatchdog | None  # None when LOOPWISE_WATCHDOG_ENABLED is off
    metrics: Metrics
    # Accounts: argon2id on its own bounded thread pool; IANA zone names for preferences.
    passwords: Passwords
    sessions: SessionCache  # callers by token, forgotten when PostgreSQL announces a change
    timezones: frozenset[str]
    # The optional downstream services (loyalty, shipments); stats() for /metrics.
    downstreams: Downstreams
    # Best-effort in-process work, and the durable job worker (None when
    # LOOPWISE_JOBS_IN_PROCESS is off and `loopwise worker` processes run the jobs).
    background: BackgroundWork
    job_worker: Worker | None
