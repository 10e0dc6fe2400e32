"""What a PostgreSQL outage is, and how it is logged: one short line per kind per interval.

    outages = OutageLog()                  # one per app, or per logger
    except DATABASE_OUTAGES as exc:
        outages.failed(exc, log)           # logs now, or counts it for the next line

PostgreSQL is away, not the request wrong, when the connection is refused, reset or lost,
the server is starting up or shutting down (SQLSTATE 57P01-57P03), out of connection
slots (53300), or a failover left the pool on a read-only standby (25006). Requests that
meet one get 503 with ``Retry-After`` (``problems.py``). During an outage every request
fails the same way: a line (let alone a traceback, ~13 KB each) per failure would flood
the log with one fact and spend the CPU the service needs to recover.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import asyncpg

__all__ = ["DATABASE_OUTAGES", "OUTAGE_RETRY_AFTER", "OutageLog", "QuietOutages"]

DATABASE_OUTAGES: tuple[type[Exception], ...] = (
    OSError,  # refused, reset, unreachable: the socket's own errors (ConnectionError...)
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, and a connection lost mid-query
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ReadOnlySQLTransactionError,
    # asyncpg's own state errors on a connection the server dropped mid-use: "connection
    # is closed" and its protocol state after a terminated backend (both seen while
    # PostgreSQL restarted under the test cluster's load; /readyz already treats them so).
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)
OUTAGE_RETRY_AFTER = 5  # seconds: a restart or failover takes a few; sooner only adds load
_EVERY = 10.0  # seconds between two lines about one kind of outage


class OutageLog:
    """Decides which outage failures are logged: the first of a kind, then one per ``every`` s.

    Each line carries ``suppressed``, the failures of that kind held back since the last.
    """

    def __init__(self, every: float = _EVERY) -> None:
        self.every = every
        # kind -> (monotonic time of its last line, failures held back since then)
        self._kinds: dict[str, tuple[float, int]] = {}

    def admit(self, exc: BaseException) -> int | None:
        """The count held back before this failure if it is to be logged now, else None."""
        kind = type(exc).__name__
        now = time.monotonic()
        last, held = self._kinds.get(kind, (-self.every, 0))
        if now - last < self.every:
            self._kinds[kind] = (last, held + 1)
            return None
        self._kinds[kind] = (now, 0)
        return held

    def failed(self, exc: BaseException, log: Any) -> None:
        """Log ``exc`` on ``log`` (structlog) as one ``database_unavailable`` line, or count it."""
        held = self.admit(exc)
        if held is not None:
            log.warning(
                "database_unavailable",
                kind=type(exc).__name__,
                reason=_reason(exc),
                suppressed=held,
            )


class QuietOutages(logging.Filter):
    """For library loggers (asyncpg's pool): outage records lose their traceback, and repeat
    at most once per interval per kind.

    asyncpg's pool logs "Failed to restore the pool connection floor; retrying" with a full
    traceback on every reconnect attempt while PostgreSQL is down.
    """

    def __init__(self, every: float = _EVERY) -> None:
        super().__init__()
        self._outages = OutageLog(every)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not isinstance(exc, DATABASE_OUTAGES):
            return True
        held = self._outages.admit(exc)
        if held is None:
            return False
        record.msg = f"{record.getMessage()}: {type(exc).__name__}: {_reason(exc)}"
        if held:
            record.msg += f" ({held} more since the last line)"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        return True


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
