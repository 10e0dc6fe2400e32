"""The asyncpg pool as an async resource, and the embedded PostgreSQL.

    async with Database.from_settings(settings) as db:
        async with db.pool.acquire() as conn:
            ...

Requests never open connections of their own: they borrow one from this pool, which the
app's lifespan owns. ``statement_timeout`` is set per connection so a runaway query is
stopped by PostgreSQL itself, not only abandoned by the client.

Behind a transaction-pooling PgBouncer (``pooled=True``) a client connection is not a
server session: consecutive transactions run on whichever server connection is free. So:

- no cached (named) prepared statements: PgBouncer 1.18 (Debian 12) forwards a named
  ``Parse`` to one server and the next ``Bind`` may reach another ("prepared statement
  does not exist"); protocol-level support came in 1.21 (``max_prepared_statements``).
  With ``statement_cache_size=0`` asyncpg uses the unnamed statement and re-sends its
  Parse with every Bind ("assuming people are running PgBouncer", asyncpg's
  ``connection.py``), so no statement outlives its round trip. The price is a Parse per
  query and no cached plan (docs/operations/capacity.md has the measured cost);
- no session-level tricks: asyncpg turns ``jit`` off around its type introspection with
  session ``set_config`` calls, which a pooler may spread over three servers, so the
  introspection runs JIT-compiled (seconds on a busy server). Set ``jit = off`` for the
  role instead (``ALTER ROLE ... SET jit = off``, good for short OLTP queries anyway);
  :meth:`Database.open` warns when it finds JIT on;
- no per-connection settings: PgBouncer refuses startup parameters it does not track
  (``statement_timeout``) and a ``SET`` would leak to other clients. Transactions opened
  with :func:`transaction` carry them as ``SET LOCAL`` instead; single statements are
  bounded by asyncpg's ``command_timeout``, which cancels through PgBouncer (a cancel
  request it forwards to the right server), and PgBouncer's own ``query_timeout`` and
  ``idle_transaction_timeout`` stand behind both (``deploy/pgbouncer``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
import asyncpg.pool

from loopwise.patterns.deadlines import time_left
from loopwise.patterns.lifecycle import AsyncResource
from loopwise.service.logs import get_logger
from loopwise.service.settings import Settings

__all__ = [
    "Connection",
    "Database",
    "DatabaseStats",
    "EmbeddedUnavailable",
    "PoolExhausted",
    "embedded_postgres",
    "transaction",
]

_log = get_logger("loopwise.db")

# What `pool.acquire()` yields, or a plain connection: for functions that run inside the
# caller's transaction.
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


class PoolExhausted(TimeoutError):
    """No pooled connection freed up within ``LOOPWISE_DB_ACQUIRE_TIMEOUT``: shed, don't queue."""


class _BoundedWaitPool(asyncpg.Pool):
    """A pool whose every acquire, the ``fetch*``/``execute`` helpers' included, waits at
    most ``acquire_timeout``, and no longer than the deadline in force.

    asyncpg waits for a free connection forever by default; past saturation that is an
    unbounded queue inside the process. With a bound the excess fails fast, and the
    problem handler turns it into 503 with Retry-After.

    ``waiting`` counts the acquires in progress (the suspended ones, as any reader on the
    loop sees them) and ``on_wait`` receives each acquire's wait in seconds, the fast
    path's included: the pool's saturation as the metrics report it.
    """

    def __init__(
        self,
        *args: Any,
        acquire_timeout: float,
        on_wait: Callable[[float], None],
        transaction_sql: str | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._acquire_timeout = acquire_timeout
        self._on_wait = on_wait
        self.waiting = 0
        # SET LOCAL statements every transaction() starts with; None when the connection
        # carries the settings itself (no pooler).
        self.transaction_sql = transaction_sql

    def acquire(self, *, timeout: float | None = None) -> Any:
        bound = self._acquire_timeout if timeout is None else timeout
        # A request's deadline (the overview's starts at its arrival) bounds the wait too:
        # a connection that frees up after the caller's budget is spent is no use to it.
        left = time_left()
        return super().acquire(timeout=bound if left is None else min(bound, left))

    async def _acquire(self, timeout: float | None) -> Any:  # noqa: ASYNC109  # asyncpg's signature
        self.waiting += 1
        started = time.perf_counter()
        try:
            return await super()._acquire(timeout)  # type: ignore[misc]  # private, untyped
        except TimeoutError:
            raise PoolExhausted(
                f"no database connection free within {timeout}s (all {self.get_max_size()} in use)"
            ) from None
        finally:
            self.waiting -= 1
            self._on_wait(time.perf_counter() - started)


class DatabaseStats(NamedTuple):
    max_size: int
    size: int
    idle: int
    waiting: int  # acquires waiting for a connection to free up


class Database(AsyncResource):
    """One asyncpg pool: opened once, closed once, never reopened."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        statement_timeout: float = 5.0,
        acquire_timeout: float = 2.0,
        pooled: bool = False,
    ) -> None:
        self.dsn = dsn
        self.pooled = pooled
        self.acquire_timeout = acquire_timeout
        self._min_size = min_size
        self._max_size = max_size
        self._statement_timeout = statement_timeout
        self._pool: _BoundedWaitPool | None = None
        # Set by the metrics: receives the seconds each acquire waited for a connection.
        self.on_acquire_wait: Callable[[float], None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, dsn: str) -> Database:
        return cls(
            dsn,
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            statement_timeout=settings.db_statement_timeout,
            acquire_timeout=settings.db_acquire_timeout,
            pooled=settings.pooled,
        )

    @property
    def resource_name(self) -> str:
        return "database pool"

    @property
    def pool(self) -> asyncpg.Pool:
        """The open pool.

        Raises:
            ResourceClosed: before opening, or after closing.
        """
        self._check_open()
        assert self._pool is not None  # made by _aopen
        return self._pool

    def _acquire_waited(self, seconds: float) -> None:
        if self.on_acquire_wait is not None:
            self.on_acquire_wait(seconds)

    def stats(self) -> DatabaseStats:
        """The pool's size and idle connections, for metrics.

        Raises:
            ResourceClosed: the pool is not open.
        """
        pool = self.pool
        waiting = 0 if self._pool is None else self._pool.waiting
        return DatabaseStats(pool.get_max_size(), pool.get_size(), pool.get_idle_size(), waiting)

    async def _aopen(self) -> None:
        statement_ms = int(self._statement_timeout * 1000)
        # A connection left idle in a transaction holds locks; end it.
        idle_ms = int(max(self._statement_timeout * 2, 10) * 1000)
        if self.pooled:
            server_settings = {"application_name": "loopwise"}  # PgBouncer tracks this one
            transaction_sql: str | None = (
                f"SET LOCAL statement_timeout = {statement_ms};"
                f" SET LOCAL idle_in_transaction_session_timeout = {idle_ms}"
            )
            # The client's own timeout is the statement's only bound outside transaction():
            # asyncpg cancels the query on the server when it fires.
            command_timeout = self._statement_timeout
        else:
            server_settings = {
                "application_name": "loopwise",
                "statement_timeout": str(statement_ms),
                "idle_in_transaction_session_timeout": str(idle_ms),
            }
            transaction_sql = None
            # The client-side timeout is a backstop a little past the server's own.
            command_timeout = self._statement_timeout + 1.0
        pool = _BoundedWaitPool(
            self.dsn,
            acquire_timeout=self.acquire_timeout,
            on_wait=self._acquire_waited,
            transaction_sql=transaction_sql,
            min_size=self._min_size,
            max_size=self._max_size,
            max_queries=50_000,
            max_inactive_connection_lifetime=300.0,
            loop=None,
            connection_class=asyncpg.Connection,
            record_class=asyncpg.Record,
            command_timeout=command_timeout,
            reset=_keep_session_state,
            server_settings=server_settings,
            # 0 = unnamed statements only, which survive transaction pooling (see above).
            statement_cache_size=0 if self.pooled else 100,
        )
        await pool  # connects min_size connections
        self._pool = pool
        if self.pooled and self._min_size > 0:
            jit = await self._pool.fetchval("SHOW jit")
            if jit != "off":
                _log.warning(
                    "pooled_jit_on",
                    hint="ALTER ROLE <loopwise role> SET jit = off: asyncpg's type "
                    "introspection cannot turn it off through a transaction pooler",
                )

    async def _aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()


@contextlib.asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy]:
    """A pooled connection inside a transaction, with the pool's per-transaction settings.

        async with transaction(pool) as conn:
            await conn.execute(...)

    Behind a transaction pooler the timeouts a direct connection carries for its session
    are set here with ``SET LOCAL`` (one more round trip per transaction, right after
    ``BEGIN``); without a pooler this is just ``acquire`` + ``transaction``.
    """
    async with pool.acquire() as conn, conn.transaction():
        sql = getattr(pool, "transaction_sql", None)
        if sql is not None:
            await conn.execute(sql)
        yield conn


async def _keep_session_state(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's reset query when a connection returns to the pool.

    By default every release runs ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` — a second round trip for every one-query request, measured at about 40%
    of the throughput of ``GET /users/{id}``. Pooled connections here hold no session
    state to undo: no SET, cursors, LISTEN or session-level advisory locks (migrations and
    listeners use connections of their own). asyncpg still rolls back an open transaction
    before calling this.
    """


_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class EmbeddedUnavailable(RuntimeError):
    """The embedded PostgreSQL cannot run on this interpreter or platform."""


# PostgreSQL refuses to run as root; pgserver then runs it as this system user.
SERVER_USER = "pgserver"


def ensure_server_user(name: str = SERVER_USER) -> None:
    """As root, create the system user the embedded PostgreSQL runs as, if it is missing.

    pgserver would create it with ``useradd`` looked up on PATH, and a root shell's PATH
    need not hold /usr/sbin (``env PATH=/usr/bin:/bin``, some CI images), which fails on
    a machine that never ran the embedded server before. Several processes may start at
    once on such a machine (the test suite's workers do): they take turns on a lock file,
    and each looks again for the user once it holds the lock. Blocking, like the start
    itself.

    Raises:
        EmbeddedUnavailable: the user is missing and ``useradd`` is nowhere to be found.
    """
    if os.geteuid() != 0 or _user_exists(name):
        return
    useradd = shutil.which("useradd") or shutil.which("useradd", path="/usr/sbin:/sbin")
    if useradd is None:
        raise EmbeddedUnavailable(
            f"as root, the embedded PostgreSQL runs as the system user {name!r}, "
            "and `useradd` was not found to create it; create it, or run as another user"
        )
    lock_path = Path(tempfile.gettempdir()) / f"loopwise-useradd-{name}.lock"
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _user_exists(name):
            subprocess.run([useradd, "-s", "/bin/bash", name], check=True, capture_output=True)  # noqa: S603


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@contextlib.contextmanager
def embedded_postgres(data_dir: Path, *, database: str = "loopwise") -> Iterator[str]:
    """Run PostgreSQL from the ``pgserver`` wheel in ``data_dir`` and yield a DSN for it.

    Blocking: call it before the event loop starts (the CLI does). Data survives restarts;
    the server stops when the last process using this data directory leaves.

    Raises:
        EmbeddedUnavailable: pgserver is not installed (it ships wheels for CPython ≤ 3.12).
    """
    try:
        with warnings.catch_warnings():
            # platformdirs warns at pgserver's import when XDG_RUNTIME_DIR is unset (as in
            # containers and CI) and falls back to /tmp, which is what we want anyway.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            from pgserver.postgres_server import get_server  # absent where it has no wheel
    except ImportError:
        raise EmbeddedUnavailable(
            f"the embedded PostgreSQL (pgserver) has no build for Python "
            f"{sys.version_info.major}.{sys.version_info.minor}; "
            "set LOOPWISE_DATABASE_URL to a PostgreSQL server, or use Python 3.11 or 3.12"
        ) from None

    if not _IDENTIFIER.fullmatch(database):
        raise ValueError(f"database must be a plain identifier, not {database!r}")
    ensure_server_user()
    pgdata = (data_dir / "pgdata").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode="stop")
    try:
        # psql takes no parameters; `database` was checked to be a plain identifier above.
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")  # noqa: S608
        if "(0 rows)" in exists:
            server.psql(f'CREATE DATABASE "{database}";')
        uri: str = server.get_uri(database)
        yield uri
    finally:
        server.cleanup()
