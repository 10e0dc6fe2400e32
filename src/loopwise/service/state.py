"""What the app's lifespan owns and hands to every request (Starlette lifespan state).

    state = lifespan_state(request)     # typed: state["db"] is a Database
    db = state["db"]

Starlette hands each request a shallow copy of what the lifespan yielded, in
``scope["state"]``; :func:`lifespan_state` reads it with its type, so nothing reads
``request.state`` untyped. Routes declare what they need through the aliases in ``deps``.
"""

from __future__ import annotations

from typing import TypedDict, cast

from starlette.requests import HTTPConnection

from loopwise.patterns import BlockingPool, LoopWatchdog
from loopwise.service.db import Database
from loopwise.service.downstreams import Downstreams
from loopwise.service.drain import Drain
from loopwise.service.identity.passwords import Passwords
from loopwise.service.identity.preferences_cache import PreferencesCache
from loopwise.service.identity.session_cache import SessionCache
from loopwise.service.jobs import Worker
from loopwise.service.settings import Settings

__all__ = ["AppState", "lifespan_state"]


class AppState(TypedDict):
    settings: Settings
    drain: Drain  # draining: /readyz answers 503 while the instance leaves rotation
    db: Database
    # The newest migration this code ships; /readyz compares the database against it.
    schema_revision: str | None
    # Off the loop: blocking calls (file reads, tracebacks) run on a bounded thread pool;
    # the watchdog measures the loop's lag.
    blocking: BlockingPool
    watchdog: LoopWatchdog | None  # None when LOOPWISE_WATCHDOG_ENABLED is off
    # Accounts: argon2id on its own bounded thread pool; IANA zone names for preferences.
    passwords: Passwords
    sessions: SessionCache  # callers by token, forgotten when PostgreSQL announces a change
    preferences: PreferencesCache  # the callers' preferences documents, under the same rule
    timezones: frozenset[str]
    # The optional downstream services (loyalty, shipments); stats() for /metrics.
    downstreams: Downstreams
    # The durable job worker (None when LOOPWISE_JOBS_IN_PROCESS is off and
    # `loopwise worker` processes run the jobs).
    job_worker: Worker | None


def lifespan_state(connection: HTTPConnection) -> AppState:
    """The resources the app's lifespan yielded, as this request sees them."""
    return cast("AppState", connection.scope["state"])
