"""What PgBouncer's transaction pooling and HAProxy cost, in paired alternating runs.

    ./scripts/bench-cluster                      # prints the ratios (about 6 minutes)
    ./scripts/bench-cluster --rounds 5 --seconds 8

One private PostgreSQL, one PgBouncer (transaction pooling, the shipped template) and
API instances on their own loopback addresses, all started here and stopped at the end.
Each comparison runs its two sides one after the other, alternating which goes first,
``--rounds`` times; a ratio is taken per round (so a burst of load from something else
on the machine hits one pair, not one side), and the median and the range are printed.

- pooling: ``GET /users/{id}``, ``GET /users/me/overview`` and ``POST /register`` on an
  instance with a direct URL vs one whose URL goes through PgBouncer;
- the balancer: ``GET /users/{id}`` on one instance directly vs through HAProxy, and
  through HAProxy to one instance vs to three (two cores cap the total: that ratio says
  how much of the box a second and third process add, not how a cluster scales).

Load: wrk, closed loop, one thread, ``--connections`` connections, on the same machine.
argon2id is at its cheapest here so ``POST /register`` measures its database work, not
the hash (which is the same with and without a pooler). PostgreSQL transactions per
request come from ``pg_stat_database.xact_commit``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import statistics
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from loopwise_bench.generators import find_load_generator

# The test cluster's engines and instances (tests/cluster/): the same processes and
# configuration files as the cluster tests, so the figures describe what those test.
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.cluster.engines import HAProxy, PgBouncer, PrivatePostgres
from tests.cluster.topology import ApiInstance, _base_env, _migrate
from tests.process_guard import start_guard, stop_guard

__all__ = ["main"]

_REGISTER_LUA = """
-- One unique email per request: the prefix comes from the command line (-- PREFIX).
local prefix, counter = "x", 0
function init(args) prefix = args[1] end
function request()
  counter = counter + 1
  local body = '{"email":"b' .. prefix .. '-' .. counter .. '@example.com",'
    .. '"password":"correct horse battery","display_name":"Bench"}'
  return wrk.format("POST", "/register", {["Content-Type"] = "application/json"}, body)
end
"""


@dataclass(frozen=True)
class Run:
    rps: float
    non_2xx: int
    xacts_per_request: float


async def _wrk(
    url: str,
    *,
    seconds: float,
    connections: int,
    token: str | None,
    lua: Path | None,
    counter_dsn: str,
) -> Run:
    args = [
        find_load_generator("wrk").path,
        "-t1",
        f"-c{connections}",
        f"-d{round(seconds)}s",
        "--latency",
    ]
    if token is not None:
        args += ["-H", f"Authorization: Bearer {token}"]
    if lua is not None:
        args += ["-s", str(lua)]
    args.append(url)
    if lua is not None:
        args += ["--", uuid.uuid4().hex[:10]]
    before = await _xacts(counter_dsn)
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    after = await _xacts(counter_dsn)
    text = out.decode()
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    count = re.search(r"(\d+) requests in", text)
    if rate is None or count is None:
        raise RuntimeError(f"wrk failed on {url}:\n{text}")
    rps, total = float(rate.group(1)), int(count.group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return Run(rps, int(bad.group(1)) if bad else 0, (after - before) / max(total, 1))


async def _xacts(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        # Statistics are a snapshot per transaction; clear it to read the current figure.
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        value: int = await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        return value
    finally:
        await conn.close()


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@dataclass
class _Topology:
    apis: dict[str, ApiInstance]
    one: HAProxy  # three server lines, all the "pooled" instance
    three: HAProxy  # three instances
    direct_dsn: str


@contextlib.asynccontextmanager
async def _topology(workdir: Path) -> AsyncIterator[_Topology]:
    async with contextlib.AsyncExitStack() as stack:
        pg = await stack.enter_async_context(PrivatePostgres(workdir, max_connections=300))
        admin = await asyncpg.connect(pg.dsn())
        await admin.execute("CREATE DATABASE loopwise")
        await admin.execute("ALTER ROLE postgres SET jit = off")
        await admin.close()
        bouncer = await stack.enter_async_context(
            PgBouncer(
                workdir, server_host=pg.host, server_port=pg.port, database="loopwise", pool_size=20
            )
        )
        direct = pg.dsn("loopwise")
        await _migrate(_base_env(workdir, database_url=direct), workdir)
        common = {
            "jobs_in_process": "false",
            "db_pool_max": 10,
            "log_level": "warning",
            "drain_delay": 0,
            "metrics_enabled": "false",
        }
        env_direct = _base_env(workdir, database_url=direct, **common)
        env_pooled = _base_env(
            workdir, database_url=bouncer.dsn(), database_direct_url=direct, **common
        )
        apis = {
            "direct": ApiInstance(1, "127.0.0.2", env_direct, workdir),
            "pooled": ApiInstance(2, "127.0.0.3", env_pooled, workdir),
            "pooled2": ApiInstance(3, "127.0.0.4", env_pooled, workdir),
            "pooled3": ApiInstance(4, "127.0.0.5", env_pooled, workdir),
        }
        for api in apis.values():
            stack.push_async_callback(api.stop, signal.SIGINT, 30)
            await api.start()
        one = await stack.enter_async_context(
            HAProxy(workdir / "one", [(apis["pooled"].host, apis["pooled"].port)] * 3)
        )
        three = await stack.enter_async_context(
            HAProxy(
                workdir / "three",
                [(apis[k].host, apis[k].port) for k in ("pooled", "pooled2", "pooled3")],
            )
        )
        yield _Topology(apis, one, three, direct)


async def _pair(
    name: str,
    a: tuple[str, str],
    b: tuple[str, str],
    *,
    rounds: int,
    seconds: float,
    connections: int,
    token: str | None,
    lua: Path | None,
    dsn: str,
) -> None:
    runs: dict[str, list[Run]] = {a[0]: [], b[0]: []}
    for round_ in range(rounds):
        order = (a, b) if round_ % 2 == 0 else (b, a)
        for label, url in order:
            runs[label].append(
                await _wrk(
                    url,
                    seconds=seconds,
                    connections=connections,
                    token=token,
                    lua=lua,
                    counter_dsn=dsn,
                )
            )
    ratios = [rb.rps / ra.rps for ra, rb in zip(runs[a[0]], runs[b[0]], strict=True)]
    line = (
        f"{name:<34} {a[0]:>9} {statistics.median(r.rps for r in runs[a[0]]):>8.0f}/s"
        f"  {b[0]:>12} {statistics.median(r.rps for r in runs[b[0]]):>8.0f}/s"
        f"  ratio {statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f})"
        f"  xact/req {statistics.median(r.xacts_per_request for r in runs[a[0]]):.2f}"
        f"/{statistics.median(r.xacts_per_request for r in runs[b[0]]):.2f}"
        f"  non-2xx {sum(r.non_2xx for r in runs[a[0]] + runs[b[0]])}"
    )
    _out(line)


def _prepare(workdir: Path) -> Path:
    workdir.chmod(0o755)  # the unprivileged servers reach into it
    for sub in ("one", "three"):
        (workdir / sub).mkdir()
    lua = workdir / "register.lua"
    lua.write_text(_REGISTER_LUA)
    return lua


async def _measure(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="loopwise-bench-cluster-") as name:
        workdir = Path(name)
        lua = await asyncio.to_thread(_prepare, workdir)
        async with _topology(workdir) as top:
            direct, pooled = top.apis["direct"], top.apis["pooled"]
            async with httpx.AsyncClient(base_url=direct.url, timeout=30) as client:
                credentials = {"email": "bench@example.com", "password": "correct horse battery"}
                registered = await client.post(
                    "/register", json=credentials | {"display_name": "Bench"}
                )
                user_id = registered.json()["id"]
                token = (await client.post("/login", json=credentials)).json()["access_token"]
            dsn = top.direct_dsn
            _out(
                f"cores={os.cpu_count()} rounds={args.rounds} seconds={args.seconds} "
                f"connections={args.connections}; ratio = second / first, per round"
            )

            async def pair(
                name: str, a: tuple[str, str], b: tuple[str, str], *, auth: bool = True
            ) -> None:
                await _pair(
                    name,
                    a,
                    b,
                    rounds=args.rounds,
                    seconds=args.seconds,
                    connections=args.connections,
                    token=token if auth else None,
                    lua=None if auth else lua,
                    dsn=dsn,
                )

            user = f"/users/{user_id}"
            await pair(
                "GET /users/{id}: pooling",
                ("direct", direct.url + user),
                ("pgbouncer", pooled.url + user),
            )
            overview = "/users/me/overview"
            await pair(
                "GET /users/me/overview: pooling",
                ("direct", direct.url + overview),
                ("pgbouncer", pooled.url + overview),
            )
            await pair(
                "POST /register: pooling",
                ("direct", direct.url + "/register"),
                ("pgbouncer", pooled.url + "/register"),
                auth=False,
            )
            await pair(
                "GET /users/{id}: HAProxy, 1 inst.",
                ("instance", pooled.url + user),
                ("haproxy", top.one.url + user),
            )
            await pair(
                "GET /users/{id}: HAProxy 1 -> 3",
                ("1 behind", top.one.url + user),
                ("3 behind", top.three.url + user),
            )
            conn = await asyncpg.connect(dsn)
            try:
                rows = await conn.fetch(
                    "SELECT application_name, count(*) AS n FROM pg_stat_activity"
                    " WHERE datname = 'loopwise' GROUP BY 1 ORDER BY 1"
                )
            finally:
                await conn.close()
            _out(
                "PostgreSQL connections to the database now: "
                + ", ".join(f"{r['application_name'] or '(none)'}={r['n']}" for r in rows)
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench-cluster", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="pairs per comparison")
    parser.add_argument("--seconds", type=int, default=5, help="each wrk run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    args = parser.parse_args(argv)
    # The engines start every process through the tests' process guard, which kills them
    # all should this command die however it dies.
    start_guard()
    try:
        asyncio.run(_measure(args))
    finally:
        stop_guard()


if __name__ == "__main__":
    main()
