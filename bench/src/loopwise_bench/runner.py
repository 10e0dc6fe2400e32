"""Run the benchmark: start what it needs, measure every scenario, stop everything.

    report = run_bench(BenchConfig.quick(), progress=print)

Servers run one at a time (two servers measured at once would share the cores), in an
order where each one's prerequisites exist: the baselines, then loopwise (whose
``POST /login`` gives the tokens), then the naive version on the same sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import resource
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from loopwise_bench.config import BenchConfig
from loopwise_bench.database import bench_database
from loopwise_bench.fanout import IMPLEMENTATIONS, run_fanout
from loopwise_bench.generators import find_load_generator, run_closed
from loopwise_bench.jobs import run_jobs
from loopwise_bench.machine import machine_facts
from loopwise_bench.memory import MemorySampler
from loopwise_bench.paired import PairedResult, run_paired
from loopwise_bench.results import BenchReport
from loopwise_bench.scenarios import SCENARIOS, SERVERS, Identity, PlanContext
from loopwise_bench.seed import seed, user_email
from loopwise_bench.server_run import log_in, run_server, server_env
from loopwise_bench.servers import ServerProcess
from loopwise_bench.sidecars import Sidecars, referenced
from loopwise_bench.sweep import BENCH_PASSWORD, Run

__all__ = ["run_bench"]

_WATCHDOG_OFF = (
    "loopwise_no_watchdog"  # the paired study's "off" side; "on" is it plus the watchdog
)
# Enough descriptors for 4,096 client sockets in the load generator plus as many in the server.
_WANTED_FILES = 16_384
_ORDER = (
    "asgi",
    "fastapi",
    "floor",
    "loopwise",
    "loopwise_one_downstream",
    "loopwise_slow_smtp",
    "naive",
    "naive_slow_smtp",
)


def _raise_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _WANTED_FILES if hard == resource.RLIM_INFINITY else min(hard, _WANTED_FILES)
    if soft < wanted:
        # Children (the load generator, the servers) inherit it: the overload run needs
        # 4,096 sockets each.
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return max(soft, wanted)


def _password_hash(password: str) -> str:
    # argon2-cffi arrives with the accounts service; imported late so the baselines run
    # on a checkout that does not have it yet.
    argon2: Any = importlib.import_module("argon2")
    hashed: str = argon2.PasswordHasher().hash(password)
    return hashed


@contextlib.contextmanager
def _maybe_database(config: BenchConfig, needed: bool) -> Iterator[str | None]:
    if not needed:
        yield None
        return
    with bench_database(config.database_url, config.data_dir) as dsn:
        yield dsn


def run_bench(config: BenchConfig, progress: Callable[[str], None]) -> BenchReport:
    """Measure every scenario ``config`` selects and return the report (not yet written)."""
    generator = find_load_generator(config.load_generator)
    files = _raise_file_limit()
    config.out_dir.mkdir(parents=True, exist_ok=True)
    run = Run(config, generator, progress)
    run.logs.mkdir(parents=True, exist_ok=True)
    wanted = [s for s in SCENARIOS.values() if config.wants(s.name)]
    servers = [name for name in _ORDER if any(s.server == name for s in wanted)]
    needs_jobs = config.wants("jobs")
    needs_db = needs_jobs or config.wants("watchdog")
    needs_db = needs_db or any(SERVERS[name].needs_database for name in servers)
    report = BenchReport(
        config={k: str(v) if isinstance(v, Path) else v for k, v in _config_dict(config).items()},
        machine={},
        started_at=time.time(),
    )
    report.notes.append(f"open files limit: {files}")
    with (
        MemorySampler() as memory,
        _maybe_database(config, needs_db) as dsn,
        _maybe_sidecars(run, _sidecars_for(servers, config)) as sidecars,
    ):
        run.sidecars = sidecars
        report.machine = machine_facts(
            generator,
            postgres="embedded (pgserver)" if config.database_url is None else "by URL",
            workers=config.workers,
        )
        env = _server_env(dsn)
        if dsn is not None:
            progress(
                f"seeding {config.users:,} users, {config.users * config.orders_per_user:,} orders"
            )
            report.seed = asyncio.run(
                seed(
                    dsn,
                    users=config.users,
                    orders_per_user=config.orders_per_user,
                    password_hash=_password_hash(BENCH_PASSWORD),
                )
            )
            # The same users for every server; tokens come once loopwise logs them in.
            count = min(config.logged_in_users, report.seed.users)
            run.context = PlanContext(
                identities=[Identity(n) for n in range(1, count + 1)],
                password=BENCH_PASSWORD,
                email_of=user_email,
            )
        for name in servers:
            run_server(run, report, memory, name, dsn, env, wanted)
        if config.wants("watchdog") and dsn is not None:
            report.watchdog = measure_watchdog(run, env)
        if config.wants("fanout"):
            measure_fanout(run, report)
        if config.wants("jobs") and dsn is not None and sidecars is not None:
            for workers in (1, 2):
                run.progress(f"jobs: {config.jobs:,} welcome emails, {workers} worker process(es)")
                jobs = run_jobs(
                    dsn,
                    sidecars.values["smtp_fast"],
                    jobs=config.jobs,
                    workers=workers,
                    log_dir=run.logs,
                )
                report.jobs.append(jobs)
                run.progress(f"  {jobs.per_second:,.0f} jobs/s, {jobs.dead} dead")
        report.memory = memory.series()
    return report


def _sidecars_for(servers: list[str], config: BenchConfig) -> set[str]:
    if config.wants("watchdog"):
        servers = [*servers, _WATCHDOG_OFF]
    wanted = referenced(SERVERS[name].env for name in servers)
    return wanted | ({"smtp_fast"} if config.wants("jobs") else set())


@contextlib.contextmanager
def _maybe_sidecars(run: Run, wanted: set[str]) -> Iterator[Sidecars | None]:
    if not wanted:
        yield None
        return
    run.progress(f"starting {', '.join(sorted(wanted))} (downstream simulators, SMTP sinks)")
    with Sidecars(run.logs, wanted) as sidecars:
        yield sidecars


def _server_env(dsn: str | None) -> dict[str, str]:
    env = {"LOOPWISE_LOG_FORMAT": "json", "LOOPWISE_MIGRATE_ON_START": "false"}
    if dsn is not None:
        env |= {"LOOPWISE_BENCH_DSN": dsn, "LOOPWISE_DATABASE_URL": dsn}
    return env


def _config_dict(config: BenchConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


def measure_watchdog(run: Run, env: dict[str, str]) -> PairedResult:
    """GET /users/{id} throughput with the watchdog on over off, in alternating rounds.

    Two servers identical but for ``LOOPWISE_WATCHDOG_ENABLED``, both running throughout;
    only the one being measured gets load (see :mod:`loopwise_bench.paired`).
    """
    c = run.config
    run.progress(
        f"watchdog on vs off: {c.watchdog_rounds} alternating rounds of "
        f"GET /users/{{id}} at c={c.watchdog_connections}, {c.seconds:g} s each"
    )
    factory = SERVERS[_WATCHDOG_OFF].factory
    off_env = server_env(run, _WATCHDOG_OFF, env, label="watchdog-off")
    on_env = server_env(run, _WATCHDOG_OFF, env, label="watchdog-on")
    on_env["LOOPWISE_WATCHDOG_ENABLED"] = "true"
    with (
        ServerProcess(
            "watchdog-on", factory, workers=c.workers, log_dir=run.logs, env=on_env
        ) as on,
        ServerProcess(
            "watchdog-off", factory, workers=c.workers, log_dir=run.logs, env=off_env
        ) as off,
    ):
        if not all(i.token for i in run.context.identities):
            run.context = log_in(on.url, run.context)
        plan = SCENARIOS["user_by_id"].plan(run.context)
        if c.warmup_seconds:
            for server in (on, off):
                run_closed(
                    run.generator, server.url, plan, connections=16, seconds=c.warmup_seconds
                )
        result = run_paired(
            run.generator,
            "on",
            on.url,
            "off",
            off.url,
            plan,
            rounds=c.watchdog_rounds,
            connections=c.watchdog_connections,
            seconds=c.seconds,
            threads=c.wrk_threads,
        )
    run.progress(
        f"  on / off: median {result.median}, range {result.low} to {result.high} "
        f"({', '.join(map(str, result.ratios))})"
    )
    return result


def measure_fanout(run: Run, report: BenchReport) -> None:
    c = run.config
    run.progress(
        f"outbound fan-out: {c.fanout_urls} URLs at {c.fanout_delay_ms} ms, "
        f"{c.fanout_limit} at a time"
    )
    target = SERVERS["asgi"]
    with ServerProcess("fanout-target", target.factory, workers=1, log_dir=run.logs) as server:
        url = f"{server.url}/delay/{c.fanout_delay_ms}"
        for implementation in IMPLEMENTATIONS:
            result = run_fanout(
                implementation,
                url,
                count=c.fanout_urls,
                limit=c.fanout_limit,
                delay_ms=c.fanout_delay_ms,
            )
            report.fanout.append(result)
            run.progress(
                f"  {implementation}: {result.seconds:.2f} s "
                f"({result.ratio_to_ideal:.2f}x the ideal {result.ideal_seconds:.1f} s), "
                f"{result.failed} failed"
            )
