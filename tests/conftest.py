"""The test harness: a real PostgreSQL, a fresh database per test, a blocking-call detector.

``redis_server`` is a private ``redis-server`` on a free loopback port, for the tests that
share limits through Redis (never the machine's own Redis on 6379).

PostgreSQL is the server named by ``LOOPWISE_TEST_DATABASE_URL`` when it is set, otherwise
an embedded one (pgserver) started for the run in a temporary directory. Migrations run
once per pytest process into a template database of its own; each test gets its own clone,
so no two tests share a row.

Under pytest-xdist (``./scripts/test`` runs 4 workers) the workers share one embedded
server: pgserver counts the processes using a data directory, under a lock, and stops the
server when the last one leaves. Four servers would cost four ``initdb`` runs, which
pgserver's lock serialises at the start of every run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import uvloop
from asgi_lifespan import LifespanManager
from blockbuster import BlockBuster, blockbuster_ctx
from fastapi import FastAPI

from loopwise.service.app import create_app
from loopwise.service.db import embedded_postgres
from loopwise.service.migrate import migrate
from loopwise.service.settings import Settings, load_settings
from tests.cluster.engines import PrivateRedis
from tests.pg import with_database

# Every process a test starts through tests/process_guard.py dies with this pytest process:
# the guard starts and stops with the run. Its hooks are imported here rather than the
# module named in `pytest_plugins`: other test modules import it first, and pytest then
# refuses to register (and assertion-rewrite) an already imported module.
from tests.process_guard import pytest_configure, pytest_unconfigure  # noqa: F401
from tests.virtual_time import virtual_time_loop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Tests run on asyncio's loop; ``@pytest.mark.asyncio(loop_factories=[...])`` picks more.

    ``@pytest.mark.virtual_time`` runs the test, fixtures included, on a loop whose clock
    jumps to the next timer whenever every task waits (trio's autojump clock).
    """
    if item.get_closest_marker("virtual_time") is not None:
        return {"asyncio": virtual_time_loop}
    marker = item.get_closest_marker("asyncio")
    if marker is None or "loop_factories" not in marker.kwargs:
        return {"asyncio": asyncio.new_event_loop}
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """A DSN with the right to create databases, on the server the tests use."""
    url = os.environ.get("LOOPWISE_TEST_DATABASE_URL")
    if url:
        yield url
        return
    # A directory of our own, not pytest's numbered tmp dirs: another pytest run on the
    # same machine prunes those, and would delete the data from under a running server.
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:
        with (
            tempfile.TemporaryDirectory(prefix="loopwise-test-pg-") as own_dir,
            embedded_postgres(Path(own_dir), database="loopwise_admin") as dsn,
        ):
            yield dsn
        return
    # One directory per run, named by xdist's id for it, shared by the run's workers.
    data_dir = Path(tempfile.gettempdir()) / f"loopwise-test-pg-{run}"
    data_dir.mkdir(exist_ok=True)
    try:
        with embedded_postgres(data_dir, database="loopwise_admin") as dsn:
            yield dsn
    finally:
        # The last worker out stopped the server (pg_ctl removes postmaster.pid): it tidies.
        if not (data_dir / "pgdata" / "postmaster.pid").exists():
            shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def shared_server_held(request: pytest.FixtureRequest) -> None:
    """Under xdist, every worker holds the shared embedded server from its first test on.

    Otherwise the last of the early finishers would stop it, and delete its directory,
    while a worker busy with a long test has yet to open it.
    """
    if "PYTEST_XDIST_TESTRUNUID" in os.environ and not os.environ.get("LOOPWISE_TEST_DATABASE_URL"):
        request.getfixturevalue("pg_admin_dsn")


@pytest.fixture(scope="session")
def template_database(pg_admin_dsn: str) -> Iterator[str]:
    """A migrated database, cloned by each test; its name is unique to this session."""
    name = f"loopwise_tmpl_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(pg_admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        migrate(with_database(pg_admin_dsn, name))
        yield name
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def database_url(pg_admin_dsn: str, template_database: str) -> AsyncIterator[str]:
    """A database of this test's own, migrated, dropped afterwards."""
    name = f"loopwise_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        yield with_database(pg_admin_dsn, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        database_url=database_url,
        data_dir=tmp_path,
        log_format="json",
        # argon2id at its cheapest: tests exercise the code path, not the cost.
        argon2_time_cost=1,
        argon2_memory_kib=64,
        argon2_parallelism=1,
        password_hash_workers=2,
        # Threads of the test's process: a hashing process per app would cost every test
        # a spawn. The process pool is tested in test_passwords.py, and serves every test
        # that runs `loopwise serve`.
        password_hash_isolation="thread",
        _env_file=None,
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The real app with its lifespan running (pool open)."""
    application = create_app(settings)
    async with LifespanManager(application) as manager:
        yield manager.app  # type: ignore[misc]


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://loopwise.test") as c:
        yield c


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    """A private redis-server on 127.0.0.1, nothing persisted; the test may stop and start it."""
    async with PrivateRedis(tmp_path) as server:
        yield server


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fail any test whose async code makes a blocking call on the event loop."""
    with blockbuster_ctx() as bb:
        # Allowed one by one, each with its reason:
        # asyncpg's DSN parser looks for ~/.pgpass and ~/.postgresql/ TLS files (stat,
        # small reads) once per new connection, not per query; pools keep connections.
        for function in bb.functions.values():
            function.can_block_in("asyncpg/connect_utils.py", "_parse_connect_dsn_and_args")
        # asyncpg looks for ~/.pgpass (os.stat, a file read) when a DSN has no password;
        # it happens once per new pool connection, not per query.
        for call in ("os.stat", "io.BufferedReader.read"):
            bb.functions[call].can_block_in("asyncpg/connect_utils.py", "_read_password_file")
        # Over TCP, asyncpg looks for ~/.postgresql/postgresql.{key,crt} for SSL (resolve,
        # exists); once per new connection, like the password file.
        for call in ("os.path.abspath", "os.stat"):
            bb.functions[call].can_block_in(
                "asyncpg/connect_utils.py", {"_dot_postgresql_path", "_parse_connect_dsn_and_args"}
            )
        # process_* metrics read /proc/self/{stat,limits,fd} at scrape time: procfs lives
        # in kernel memory, so these reads never wait on a device (tens of microseconds).
        for call in ("io.BufferedReader.read", "os.listdir", "os.stat"):
            bb.functions[call].can_block_in(
                "prometheus_client/process_collector.py", {"collect", "_boot_time"}
            )
        # hypothesis reads the test modules' files for constants to draw, once per newly
        # imported module; a draw inside an async test (st.data()) runs it on the test's
        # loop. The test's own machinery, not the service's.
        for function in bb.functions.values():
            function.can_block_in(
                "hypothesis/internal/conjecture/providers.py", "_get_local_constants"
            )
        yield bb
