"""Run the benchmark: start what it needs, measure every scenario, stop everything.

    report = run_bench(BenchConfig.quick(), progress=print)

Servers run one at a time (two servers measured at once would share the cores), in an
order where each one's prerequisites exist: the baselines, then loopwise (whose
``POST /login`` gives the tokens), then the seed's naive version on the same sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import resource
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from loopwise.bench.config import BenchConfig
from loopwise.bench.database import bench_database, has_tables
from loopwise.bench.fanout import FanoutResult, run_fanout
from loopwise.bench.jobs import JobsResult, run_jobs
from loopwise.bench.loadgen import (
    ClosedResult,
    PacedResult,
    RequestPlan,
    find_wrk,
    run_closed,
    run_paced,
)
from loopwise.bench.machine import machine_facts
from loopwise.bench.memory import MemorySampler, Sample
from loopwise.bench.overload import OverloadResult, run_overload
from loopwise.bench.scenarios import SCENARIOS, SERVERS, Identity, PlanContext, Scenario
from loopwise.bench.seed import SeedCounts, seed, user_email
from loopwise.bench.servers import ServerProcess
from loopwise.bench.sidecars import Sidecars, referenced
from loopwise.bench.soak import SoakResult, run_soak
from loopwise.bench.storm import StormResult, run_storm

__all__ = ["BENCH_PASSWORD", "BenchReport", "ScenarioResult", "run_bench"]

BENCH_PASSWORD = "bench-password-1234"  # noqa: S105 -- the seeded users' known password

# Enough descriptors for 4,096 client sockets in wrk plus as many in the server.
_WANTED_FILES = 16_384
_ORDER = (
    "asgi",
    "fastapi",
    "floor",
    "loopwise",
    "loopwise_no_watchdog",
    "loopwise_one_downstream",
    "loopwise_slow_smtp",
    "naive",
    "naive_slow_smtp",
)


@dataclass(slots=True)
class ScenarioResult:
    name: str
    server: str
    title: str
    closed: list[ClosedResult] = field(default_factory=list)
    paced: PacedResult | None = None
    skipped: str | None = None

    @property
    def peak(self) -> ClosedResult | None:
        return max(self.closed, key=lambda r: r.rps, default=None)


@dataclass(slots=True)
class BenchReport:
    config: dict[str, Any]
    machine: dict[str, Any]
    started_at: float
    seed: SeedCounts | None = None
    scenarios: dict[str, ScenarioResult] = field(default_factory=dict)
    overload: OverloadResult | None = None
    fanout: list[FanoutResult] = field(default_factory=list)
    storm: StormResult | None = None
    soak: SoakResult | None = None
    jobs: list[JobsResult] = field(default_factory=list)
    memory: dict[str, list[Sample]] = field(default_factory=dict)
    shutdown: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _raise_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _WANTED_FILES if hard == resource.RLIM_INFINITY else min(hard, _WANTED_FILES)
    if soft < wanted:
        # Children (wrk, the servers) inherit it: the overload run needs 4,096 sockets each.
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return max(soft, wanted)


def _password_hash(password: str) -> str:
    # argon2-cffi arrives with the accounts service; imported late so the baselines run
    # on a checkout that does not have it yet.
    argon2: Any = importlib.import_module("argon2")
    hashed: str = argon2.PasswordHasher().hash(password)
    return hashed


def _login(base_url: str, identities: list[Identity]) -> list[Identity]:
    out = []
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        for identity in identities:
            body = {"email": user_email(identity.user_id), "password": BENCH_PASSWORD}
            response = client.post("/login", json=body)
            response.raise_for_status()
            out.append(Identity(identity.user_id, response.json()["access_token"]))
    return out


def _paths(base_url: str) -> set[str]:
    with httpx.Client(base_url=base_url, timeout=10.0) as client:
        return set(client.get("/openapi.json").json().get("paths", {}))


class _Run:
    """The state of one run: the report so far and what the scenarios draw on."""

    def __init__(self, config: BenchConfig, wrk: str, progress: Callable[[str], None]) -> None:
        self.config = config
        self.wrk = wrk
        self.progress = progress
        self.context = PlanContext(password=BENCH_PASSWORD, email_of=user_email)
        self.logs = config.out_dir / "logs"
        self.sidecars: Sidecars | None = None

    def measure(self, scenario: Scenario, server: ServerProcess) -> ScenarioResult:
        c = self.config
        result = ScenarioResult(scenario.name, scenario.server, scenario.title)
        plan = scenario.plan(self.context)
        cap = scenario.max_connections or max(c.concurrencies)
        concurrencies = sorted({min(n, cap) for n in c.concurrencies})
        rate = min(c.rate, scenario.rate or c.rate)
        paced_connections = min(scenario.paced_connections or c.paced_connections, 256)
        # A slow endpoint (argon2) queues what a closed loop sends it and answers it after
        # wrk has gone: measure its constant rate first, after a gentle warm-up.
        slow = scenario.max_connections is not None
        if c.warmup_seconds:
            warm = 2 if slow else min(16, cap)
            run_closed(self.wrk, server.url, plan, connections=warm, seconds=c.warmup_seconds)
        if slow:
            result.paced = self._paced(scenario, server, plan, rate, paced_connections)
        for connections in concurrencies:
            closed = run_closed(
                self.wrk,
                server.url,
                plan,
                connections=connections,
                seconds=c.seconds,
                threads=c.wrk_threads,
            )
            result.closed.append(closed)
            self.progress(
                f"  {scenario.name} closed c={connections}: {closed.rps:,.0f} req/s, "
                f"p99 {closed.latency_us.get('p99', 0) / 1000:,.1f} ms, {closed.error_count} errors"
            )
        time.sleep(c.settle_seconds)
        if scenario.paced and not slow:
            result.paced = self._paced(scenario, server, plan, rate, paced_connections)
        return result

    def _paced(
        self,
        scenario: Scenario,
        server: ServerProcess,
        plan: RequestPlan,
        rate: float,
        connections: int,
    ) -> PacedResult:
        paced = run_paced(
            self.wrk,
            server.url,
            plan,
            rate=rate,
            connections=connections,
            seconds=self.config.paced_seconds,
        )
        lat = paced.latency_us
        self.progress(
            f"  {scenario.name} at {rate:,.0f} req/s: p50 {lat.get('p50', 0) / 1000:,.2f} ms "
            f"p99 {lat.get('p99', 0) / 1000:,.2f} ms p99.9 {lat.get('p999', 0) / 1000:,.2f} ms, "
            f"{paced.error_count} errors"
        )
        return paced


@contextlib.contextmanager
def _maybe_database(config: BenchConfig, needed: bool) -> Iterator[str | None]:
    if not needed:
        yield None
        return
    with bench_database(config.database_url, config.data_dir) as dsn:
        yield dsn


def run_bench(config: BenchConfig, progress: Callable[[str], None]) -> BenchReport:
    """Measure every scenario ``config`` selects and return the report (not yet written)."""
    wrk = find_wrk()
    files = _raise_file_limit()
    config.out_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(config, wrk, progress)
    run.logs.mkdir(parents=True, exist_ok=True)
    wanted = [s for s in SCENARIOS.values() if config.wants(s.name)]
    servers = [name for name in _ORDER if any(s.server == name for s in wanted)]
    needs_jobs = config.wants("jobs")
    needs_db = needs_jobs or any(SERVERS[name].needs_tables for name in servers)
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
            wrk,
            postgres="embedded (pgserver)" if config.database_url is None else "by URL",
            workers=config.workers,
        )
        env = _server_env(dsn)
        if dsn is not None and has_tables(dsn, "users", "orders", "preferences"):
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
            _run_server(run, report, memory, name, dsn, env, wanted)
        if config.wants("fanout"):
            _fanout(run, report)
        if (
            config.wants("jobs")
            and dsn is not None
            and sidecars is not None
            and has_tables(dsn, "jobs")
        ):
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
    wanted = referenced(SERVERS[name].env for name in servers)
    return wanted | ({"smtp_fast"} if config.wants("jobs") else set())


@contextlib.contextmanager
def _maybe_sidecars(run: _Run, wanted: set[str]) -> Iterator[Sidecars | None]:
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


def _run_server(
    run: _Run,
    report: BenchReport,
    memory: MemorySampler,
    name: str,
    dsn: str | None,
    env: dict[str, str],
    wanted: list[Scenario],
) -> None:
    server = SERVERS[name]
    mine = [s for s in wanted if s.server == name]
    missing = [t for t in server.needs_tables if dsn is None or not has_tables(dsn, t)]
    if missing:
        for s in mine:
            reason = f"schema has no table {', '.join(missing)} (migration 0002 not on this branch)"
            report.scenarios[s.name] = ScenarioResult(s.name, s.server, s.title, skipped=reason)
        run.progress(f"{server.title}: skipped, no table {', '.join(missing)}")
        return
    run.progress(f"starting {server.title} ({run.config.workers} worker(s))")
    env = {**env, **(run.sidecars.fill(server.env) if run.sidecars else {})}
    if server.is_loopwise:
        # As `loopwise serve` does with several workers: /metrics sums every worker's.
        metrics_dir = run.logs / f"metrics-{name}"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir.resolve())
    with ServerProcess(
        name, server.factory, workers=run.config.workers, log_dir=run.logs, env=env
    ) as process:
        memory.watch(name, process.pid)
        paths = _paths(process.url) if server.is_loopwise else set()
        tokens = all(i.token for i in run.context.identities)
        if server.is_loopwise and "/login" in paths and run.context.identities and not tokens:
            run.progress(f"logging in {len(run.context.identities)} users")
            run.context = PlanContext(
                identities=_login(process.url, list(run.context.identities)),
                password=BENCH_PASSWORD,
                email_of=user_email,
            )
        for scenario in mine:
            absent = [p for p in scenario.needs_paths if p not in paths]
            identities = run.context.identities
            if absent or (scenario.needs_tokens and not all(i.token for i in identities)):
                why = f"no endpoint {', '.join(absent)}" if absent else "no logged-in users"
                report.scenarios[scenario.name] = ScenarioResult(
                    scenario.name, scenario.server, scenario.title, skipped=why
                )
                run.progress(f"{scenario.title}: skipped, {why}")
                continue
            run.progress(f"{scenario.title}")
            report.scenarios[scenario.name] = run.measure(scenario, process)
            if run.config.overload_on == scenario.name:
                report.overload = _overload(run, scenario, process)
        if name == "loopwise" and run.config.wants("storm") and run.context.identities:
            report.storm = _storm(run, process)
        if name == "loopwise" and run.config.wants("soak") and run.context.identities:
            report.soak = _soak(run, process)
        memory.unwatch(name)
    report.shutdown[name] = {"seconds": process.stop_seconds, "exit_code": process.exit_code}


def _overload(run: _Run, scenario: Scenario, process: ServerProcess) -> OverloadResult:
    c = run.config
    return run_overload(
        run.wrk,
        process.url,
        scenario.name,
        scenario.plan(run.context),
        concurrencies=c.overload_concurrencies,
        seconds=c.seconds,
        threads=c.wrk_threads,
        recovery_rate=c.rate / 2,
        recovery_connections=c.paced_connections,
        progress=run.progress,
    )


def _storm(run: _Run, process: ServerProcess) -> StormResult:
    c = run.config
    # Half the constant rate: the reads must stay below what two cores serve while argon2
    # takes its share, or the figure measures a queue, not the storm's interference.
    rate = c.rate / 2
    time.sleep(c.settle_seconds)
    run.progress(f"registration storm beside GET /users/{{id}} at {rate:,.0f} req/s")
    result = run_storm(
        run.wrk,
        process.url,
        SCENARIOS["user_by_id"].plan(run.context),
        SCENARIOS["register"].plan(run.context),
        rate=rate,
        connections=c.paced_connections,
        storm_connections=8,
        seconds=c.paced_seconds,
    )
    for label, paced, lag in (
        ("quiet", result.quiet, result.quiet_lag),
        ("storm", result.stormy, result.stormy_lag),
    ):
        run.progress(
            f"  {label}: p99 {paced.latency_us.get('p99', 0) / 1000:,.2f} ms; loop lag "
            f"p99 <= {lag['p99_le_ms']} ms, max <= {lag['max_le_ms']} ms"
        )
    return result


def _soak(run: _Run, process: ServerProcess) -> SoakResult:
    c = run.config
    mixed = SCENARIOS["mixed"]
    rate = min(c.rate, mixed.rate or c.rate)
    time.sleep(c.settle_seconds)
    run.progress(f"soak: {mixed.title} at {rate:,.0f} req/s for {c.soak_seconds:,.0f} s")
    result = run_soak(
        run.wrk,
        process.url,
        mixed.plan(run.context),
        rate=rate,
        connections=c.paced_connections,
        seconds=c.soak_seconds,
        pid=process.pid,
    )
    run.progress(
        f"  {result.paced.error_count} errors; memory growth after warm-up at most "
        f"{result.max_growth:.1%}"
    )
    return result


def _fanout(run: _Run, report: BenchReport) -> None:
    c = run.config
    run.progress(
        f"outbound fan-out: {c.fanout_urls} URLs at {c.fanout_delay_ms} ms, "
        f"{c.fanout_limit} at a time"
    )
    target = SERVERS["asgi"]
    with ServerProcess("fanout-target", target.factory, workers=1, log_dir=run.logs) as server:
        url = f"{server.url}/delay/{c.fanout_delay_ms}"
        for implementation in ("loopwise", "naive"):
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


def _config_dict(config: BenchConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}
