"""The production topology on one machine: clients → HAProxy → 3 APIs → PgBouncer → PostgreSQL.

    async with running_cluster() as cluster:
        cluster.haproxy.url              # where clients go
        await cluster.apis[1].restart()  # SIGTERM (drain), wait, start again
        await cluster.pg.restart()

Each API instance is its own host: 127.0.0.2, .3 and .4 (Linux routes all of 127/8 to
the loopback interface), each a ``loopwise serve`` process with one granian worker. Two
``loopwise worker`` processes send the welcome emails to a real SMTP server (aiosmtpd) on
the test's loop. Queries go through PgBouncer (transaction pooling); LISTEN and
migrations use the direct URL. The overview's loyalty downstream is the benchmark's
simulator on the test's loop, its limit and breaker shared by the three APIs through a
private Redis (``LOOPWISE_REDIS_URL``). Every port is a free one; everything stops with
the block.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from loopwise_bench.sim import SimConfig, SimState, create_sim_app
from tests.cluster.engines import (
    HAProxy,
    PgBouncer,
    PrivatePostgres,
    PrivateRedis,
    free_port,
    scratch_directory,
)
from tests.process_guard import kill_group, spawn
from tests.servers import serve_asgi
from tests.service.jobs.smtp import SmtpServer, smtp_server

__all__ = [
    "API_HOSTS",
    "LOYALTY_CONCURRENCY",
    "ApiInstance",
    "Cluster",
    "JobWorker",
    "running_cluster",
]

API_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
DATABASE = "loopwise"
# The loyalty downstream's limit, shared by the three APIs (12 at once if per process).
LOYALTY_CONCURRENCY = 4
# HAProxy checks /readyz every second and needs 2 failures (deploy/haproxy/haproxy.cfg):
# a 3 s drain leaves it out of rotation with a second to spare, on a busy machine too.
DRAIN_DELAY = 3.0


def _base_env(cluster_dir: Path, **settings: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPWISE_")}
    values: dict[str, object] = {
        "log_format": "json",
        "log_level": "info",
        # argon2id at its cheapest: the cluster tests exercise paths, not hashing cost.
        "argon2_time_cost": 1,
        "argon2_memory_kib": 64,
        "argon2_parallelism": 1,
        "password_hash_workers": 1,
        "db_pool_min": 1,
        "db_pool_max": 4,
        "watchdog_enabled": "false",
        "metrics_enabled": "true",
    } | settings
    env.update({f"LOOPWISE_{k.upper()}": str(v) for k, v in values.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


class _Child:
    """A ``python -m loopwise ...`` process whose output goes to a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def spawn(self) -> None:
        await asyncio.to_thread(self.workdir.mkdir, exist_ok=True)
        log = await asyncio.to_thread(open, self.log_path, "ab")
        try:
            # cwd is the instance's own directory: no developer's .env leaks in.
            self.proc = await spawn(
                sys.executable,
                "-m",
                "loopwise",
                *self.args,
                cwd=self.workdir,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            await asyncio.to_thread(log.close)
        self.starts += 1

    async def stop(self, sig: int = signal.SIGTERM, within: float = 60) -> int:
        """Signal it and wait for it to exit; killed past ``within`` seconds. Its status."""
        proc = self.proc
        assert proc is not None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                if sig == signal.SIGKILL:
                    # The whole instance, as a container runtime or the OOM killer would:
                    # granian's worker processes too (its own session: pgid == pid).
                    os.killpg(proc.pid, sig)
                else:
                    proc.send_signal(sig)
            try:
                async with asyncio.timeout(within):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        kill_group(proc.pid)
        assert proc.returncode is not None
        return proc.returncode

    async def log_tail(self, lines: int = 40) -> str:
        text = await asyncio.to_thread(self.log_path.read_text, errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    async def error_kinds(self) -> Counter[str]:
        """The exception classes its log reports for requests that failed with 500."""
        text = await asyncio.to_thread(self.log_path.read_text, errors="replace")
        kinds: Counter[str] = Counter()
        for line in text.splitlines():
            if line.startswith("{") and "unhandled_exception" in line:
                event = json.loads(line)
                last = str(event.get("exception", "")).strip().splitlines()[-1:] or ["?"]
                kinds[last[0].split(":")[0]] += 1
        return kinds


class ApiInstance(_Child):
    """One ``loopwise serve`` on its own loopback address."""

    def __init__(self, index: int, host: str, env: dict[str, str], workdir: Path) -> None:
        self.host = host
        self.port = free_port(host)
        env = env | {"LOOPWISE_HOST": host, "LOOPWISE_PORT": str(self.port)}
        super().__init__(f"api{index}", ["serve"], env, workdir / f"api{index}")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await self.spawn()
        await self.wait_ready()

    async def wait_ready(self, within: float = 90) -> None:
        # A bounded poll of /readyz: the only signal another process gives.
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as client:
            try:
                async with asyncio.timeout(within):
                    while True:
                        if not self.running:
                            raise AssertionError(f"{self.name} exited:\n{await self.log_tail()}")
                        with contextlib.suppress(httpx.TransportError):
                            if (await client.get("/readyz")).status_code == 200:
                                return
                        await asyncio.sleep(0.1)
            except TimeoutError:
                raise AssertionError(f"{self.name} never ready:\n{await self.log_tail()}") from None

    async def restart(self) -> None:
        """A rolling deploy's step: SIGTERM (the drain runs), wait for exit, start again."""
        status = await self.stop(signal.SIGTERM)
        assert status == 0, f"{self.name} exited {status}:\n{await self.log_tail()}"
        await self.start()


class JobWorker(_Child):
    """One ``loopwise worker`` process."""

    def __init__(self, index: int, env: dict[str, str], workdir: Path) -> None:
        super().__init__(f"worker{index}", ["worker"], env, workdir / f"worker{index}")


@dataclass
class Cluster:
    workdir: Path
    pg: PrivatePostgres
    bouncer: PgBouncer
    haproxy: HAProxy
    smtp: SmtpServer
    apis: list[ApiInstance]
    workers: list[JobWorker]
    redis: PrivateRedis
    loyalty: SimState
    loyalty_config: SimConfig
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def direct_dsn(self) -> str:
        return self.pg.dsn(DATABASE)

    async def query(self, sql: str, *args: object) -> list[asyncpg.Record]:
        """One query on a direct connection of its own (the test's view of the data)."""
        conn = await asyncpg.connect(self.direct_dsn, timeout=10)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    async def server_states(self) -> dict[str, dict[str, str]]:
        """HAProxy's view of each API server: its CSV stats row by server name."""
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(self.haproxy.stats_url)).text
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {row["svname"]: row for row in rows if row["pxname"] == "loopwise"}

    async def wait_for_haproxy(self, server: str, status: str, within: float = 60) -> None:
        """Wait until HAProxy reports ``server`` (api1..3) in ``status`` (UP, DOWN)."""
        async with asyncio.timeout(within):
            while True:
                states = await self.server_states()
                if states[server]["status"].startswith(status):
                    return
                await asyncio.sleep(0.1)

    async def wait_all_up(self, within: float = 90) -> None:
        for index in range(1, len(self.apis) + 1):
            await self.wait_for_haproxy(f"api{index}", "UP", within)

    async def restore(self) -> None:
        """Undo what a test did: start what it stopped, give back the simulators' defaults."""
        self.smtp.on_data = None
        self.loyalty.config = self.loyalty_config
        self.loyalty.reset_counters()
        async with asyncio.TaskGroup() as tg:
            for api in self.apis:
                if not api.running:
                    tg.create_task(api.start())
            for worker in self.workers:
                if not worker.running:
                    tg.create_task(worker.spawn())
        await self.wait_all_up()


async def _migrate(env: dict[str, str], workdir: Path) -> None:
    migrate = _Child("migrate", ["migrate"], env, workdir / "migrate")
    await migrate.spawn()
    assert migrate.proc is not None
    async with asyncio.timeout(120):
        status = await migrate.proc.wait()
    assert status == 0, await migrate.log_tail()


@contextlib.asynccontextmanager
async def running_cluster() -> AsyncIterator[Cluster]:
    """The whole topology, ready: every API instance UP in HAProxy, workers running."""
    async with contextlib.AsyncExitStack() as stack:
        workdir = await stack.enter_async_context(scratch_directory())
        pg = await stack.enter_async_context(PrivatePostgres(workdir))
        admin = await asyncpg.connect(pg.dsn(), timeout=10)
        try:
            await admin.execute(f"CREATE DATABASE {DATABASE}")
            # Behind a transaction pooler (service/db.py): JIT off for the role.
            await admin.execute("ALTER ROLE postgres SET jit = off")
        finally:
            await admin.close()
        bouncer = await stack.enter_async_context(
            PgBouncer(
                workdir,
                server_host=pg.host,
                server_port=pg.port,
                database=DATABASE,
                pool_size=20,
            )
        )
        urls = {"database_url": bouncer.dsn(), "database_direct_url": pg.dsn(DATABASE)}
        await _migrate(_base_env(workdir, **urls), workdir)
        smtp = await stack.enter_async_context(smtp_server())
        redis = await stack.enter_async_context(PrivateRedis(workdir))
        loyalty_config = SimConfig(latency_ms=5)
        loyalty = create_sim_app(loyalty_config)
        loyalty_url = await stack.enter_async_context(serve_asgi(loyalty))
        api_env = _base_env(
            workdir,
            **urls,
            redis_url=redis.url,
            redis_processes=len(API_HOSTS),
            # Three APIs, two workers, PostgreSQL, PgBouncer and HAProxy share two cores
            # here: the default 50 ms bound is overrun now and then, and a false fallback
            # admits an instance's share on top of the shared limit (measured: 5 for 4).
            redis_timeout=1.0,
            loyalty_url=loyalty_url,
            loyalty_concurrency=LOYALTY_CONCURRENCY,
            # The overview's deadline (1 s) bounds the call: a call cut off mid-flight frees
            # its slot while the downstream still works on it, so none should be cut off.
            loyalty_timeout=2,
            jobs_in_process="false",
            drain_delay=DRAIN_DELAY,
            shutdown_grace=5,
            session_cache_ttl=60,
        )
        apis = [ApiInstance(i, host, api_env, workdir) for i, host in enumerate(API_HOSTS, 1)]
        worker_env = _base_env(
            workdir,
            **urls,
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
            smtp_tls="none",
            smtp_from="loopwise <hello@loopwise.test>",
            smtp_send_timeout=5,
            jobs_lease=2,
            jobs_poll_interval=0.5,
            jobs_backoff_base=0.05,
            jobs_backoff_max=0.5,
            jobs_max_attempts=100,
            shutdown_grace=3,
        )
        workers = [JobWorker(i, worker_env, workdir) for i in (1, 2)]
        for child in (*apis, *workers):
            stack.push_async_callback(_stop_if_started, child)
        async with asyncio.TaskGroup() as tg:
            for api in apis:
                tg.create_task(api.start())
            for worker in workers:
                tg.create_task(worker.spawn())
        haproxy = await stack.enter_async_context(
            HAProxy(workdir, [(api.host, api.port) for api in apis])
        )
        cluster = Cluster(
            workdir,
            pg,
            bouncer,
            haproxy,
            smtp,
            apis,
            workers,
            redis,
            loyalty.state.sim,
            loyalty_config,
        )
        await cluster.wait_all_up()
        yield cluster


async def _stop_if_started(child: _Child) -> None:
    if child.proc is not None:
        # SIGINT: no drain at teardown (the drain is for load balancers, and this one
        # is going away too).
        await child.stop(signal.SIGINT, within=30)
