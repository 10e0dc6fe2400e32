"""`loopwise serve` as a user runs it: start-up, bad settings, graceful shutdown."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
from pathlib import Path

import asyncpg
import httpx

from tests.processes import run_loopwise, serving


async def test_bad_setting_stops_startup_with_one_line(tmp_path: Path) -> None:
    """A bad value ends start-up with exit 2 and one line naming the variable and the rule."""
    status, stderr = await run_loopwise(
        "serve", env={"LOOPWISE_DB_POOL_MAX": "zero", "LOOPWISE_DATA_DIR": str(tmp_path)}
    )
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("loopwise: invalid setting: LOOPWISE_DB_POOL_MAX")
    assert "integer" in lines[0]
    assert "Traceback" not in stderr


async def test_bad_database_url_is_named(tmp_path: Path) -> None:
    """A URL that is not PostgreSQL's is refused by name, before anything starts."""
    status, stderr = await run_loopwise("migrate", env={"LOOPWISE_DATABASE_URL": "mysql://x@y/z"})
    assert status == 2
    assert stderr.strip() == (
        "loopwise: invalid setting: LOOPWISE_DATABASE_URL: Value error, must be a postgresql:// URL"
    )


async def test_serves_on_embedded_postgres_and_keeps_data(tmp_path: Path) -> None:
    """With no URL, serve starts an embedded PostgreSQL, migrates it, and data survives."""
    env = {"LOOPWISE_DATA_DIR": str(tmp_path / "state")}
    async with serving(env) as served, httpx.AsyncClient(base_url=served.base_url) as client:
        ready = await client.get("/readyz")
        assert ready.json()["status"] == "ready"
        assert (await client.get("/docs")).status_code == 200
    assert served.proc.returncode == 0
    pgdata = tmp_path / "state" / "pgdata"
    assert await asyncio.to_thread((pgdata / "PG_VERSION").exists)
    # The server stopped with us: its postmaster.pid is gone.
    assert not await asyncio.to_thread((pgdata / "postmaster.pid").exists)
    # A second start finds the same cluster, already migrated.
    async with serving(env) as again, httpx.AsyncClient(base_url=again.base_url) as client:
        assert (await client.get("/readyz")).status_code == 200


async def test_serves_on_a_database_url(pg_admin_dsn: str, tmp_path: Path) -> None:
    """With a URL, serve uses that server; asked to, it migrates a fresh database first."""
    from tests.pg import with_database

    name = f"loopwise_serve_{tmp_path.name[-12:].replace('-', '_').lower()}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        env = {
            "LOOPWISE_DATABASE_URL": with_database(pg_admin_dsn, name),
            "LOOPWISE_MIGRATE_ON_START": "true",
            "LOOPWISE_DATA_DIR": str(tmp_path),
        }
        async with serving(env) as served, httpx.AsyncClient(base_url=served.base_url) as c:
            assert (await c.get("/readyz")).status_code == 200
        assert not await asyncio.to_thread((tmp_path / "pgdata").exists)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_sigterm_loses_no_accepted_request(database_url: str, tmp_path: Path) -> None:
    """SIGTERM under load: every request the server accepted gets its whole response.

    A request counts as accepted once the server has read it (it then appears in the access
    log under the id we sent). Connections still queued in the kernel when the listener
    closes are dropped unread, by any server; those requests were never processed, so the
    test checks that every client-side failure is absent from the server's log.
    """
    env = {
        "LOOPWISE_DATABASE_URL": database_url,
        "LOOPWISE_DATA_DIR": str(tmp_path),
        "LOOPWISE_READY_TIMEOUT": "60",
    }
    async with serving(env) as served:
        # Hold requests in flight: /readyz reads alembic_version, which we lock.
        locker = await asyncpg.connect(database_url)
        lock = locker.transaction()
        await lock.start()
        await locker.execute("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE")
        fresh = httpx.Limits(max_keepalive_connections=0)
        client_saw: dict[str, str] = {}
        stop = asyncio.Event()
        load_flowing = asyncio.Event()

        async def steady_load(client: httpx.AsyncClient, lane: int) -> None:
            # A new connection per request, until the listener is gone.
            for n in itertools.count():
                request_id = f"load-{lane}-{n}"
                try:
                    response = await client.get("/healthz", headers={"X-Request-ID": request_id})
                    client_saw[request_id] = str(response.status_code)
                    if len(client_saw) >= 20:
                        load_flowing.set()
                except httpx.TransportError as exc:
                    client_saw[request_id] = type(exc).__name__
                    if isinstance(exc, httpx.ConnectError) or stop.is_set():
                        return

        async with (
            httpx.AsyncClient(base_url=served.base_url, limits=fresh, timeout=30) as client,
            asyncio.TaskGroup() as tg,
        ):
            in_flight = [tg.create_task(client.get("/readyz")) for _ in range(6)]
            await _wait_for_lock_waiters(database_url, 6)
            for lane in range(4):
                tg.create_task(steady_load(client, lane))
            await load_flowing.wait()
            served.proc.send_signal(signal.SIGTERM)
            await served.wait_for_log("Shutting down")
            await lock.rollback()
            answered = [await task for task in in_flight]
            await served.proc.wait()
            stop.set()
        await locker.close()

    assert served.proc.returncode == 0
    assert [r.status_code for r in answered] == [200] * 6
    events = [json.loads(line) for line in served.log_lines if line.startswith("{")]
    server_saw = {e["request_id"]: str(e["status"]) for e in events if e.get("event") == "request"}
    accepted = {rid: status for rid, status in server_saw.items() if rid.startswith("load-")}
    assert accepted, "the load never reached the server"
    for request_id, status in accepted.items():
        assert client_saw.get(request_id) == status, (request_id, client_saw.get(request_id))
    failed = {rid for rid, outcome in client_saw.items() if not outcome.isdigit()}
    assert not failed & accepted.keys()
    assert any(e.get("event") == "stopping" for e in events)


async def _wait_for_lock_waiters(dsn: str, count: int) -> None:
    # Bounded poll of PostgreSQL's own view: the requests are in flight once they wait.
    # Its own connection: pg_stat_activity is a snapshot per transaction, so the lock
    # holder's transaction would keep seeing the moment it first looked.
    conn = await asyncpg.connect(dsn)
    try:
        async with asyncio.timeout(30):
            while True:
                waiting = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND query LIKE '%FROM alembic_version%'"
                )
                if waiting >= count:
                    return
                await asyncio.sleep(0.05)
    finally:
        await conn.close()
