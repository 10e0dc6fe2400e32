"""One server's turn in a run: start it, log the users in, measure its scenarios, stop it.

Loopwise's turn also carries the studies that need a running loopwise (overload on the
configured scenario, the registration storm, the soak): each ``measure_*`` below runs
its study's measurement with the run's settings and reports progress as it goes. A
scenario that needs logged-in users when there are none is reported as skipped.
"""

from __future__ import annotations

import shutil
import time

import httpx

from loopwise_bench.generators import run_paced
from loopwise_bench.loadgen import PacedResult, Request, RequestPlan
from loopwise_bench.memory import MemorySampler
from loopwise_bench.overload import OverloadResult, run_overload
from loopwise_bench.results import BenchReport, ScenarioResult
from loopwise_bench.scenarios import SCENARIOS, SERVERS, Identity, PlanContext, Scenario
from loopwise_bench.seed import user_email
from loopwise_bench.servers import ServerProcess
from loopwise_bench.soak import SoakResult, run_soak
from loopwise_bench.storm import StormResult, run_storm
from loopwise_bench.sweep import BENCH_PASSWORD, Run

__all__ = ["log_in", "run_server", "server_env"]

_ONE_BRANCH = "overview_one_downstream"  # its one downstream is the 50 ms simulator


def server_env(
    run: Run, name: str, env: dict[str, str], *, label: str | None = None
) -> dict[str, str]:
    """``env`` for server ``name``: its sidecars filled in, and loopwise's metrics directory.

    ``label`` names the directory when two instances of one server run at once.
    """
    server = SERVERS[name]
    env = {**env, **(run.sidecars.fill(server.env) if run.sidecars else {})}
    if server.is_loopwise:
        # As `loopwise serve` does with several workers: /metrics sums every worker's.
        metrics_dir = run.logs / f"metrics-{label or name}"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir.resolve())
    return env


def run_server(
    run: Run,
    report: BenchReport,
    memory: MemorySampler,
    name: str,
    dsn: str | None,
    env: dict[str, str],
    wanted: list[Scenario],
) -> None:
    server = SERVERS[name]
    mine = [s for s in wanted if s.server == name]
    run.progress(f"starting {server.title} ({run.config.workers} worker(s))")
    env = server_env(run, name, env)
    with ServerProcess(
        name, server.factory, workers=run.config.workers, log_dir=run.logs, env=env
    ) as process:
        memory.watch(name, process.pid)
        tokens = all(i.token for i in run.context.identities)
        if server.is_loopwise and run.context.identities and not tokens:
            run.progress(f"logging in {len(run.context.identities)} users")
            run.context = log_in(process.url, run.context)
        for scenario in mine:
            identities = run.context.identities
            if scenario.needs_tokens and not all(i.token for i in identities):
                why = "no logged-in users"
                report.scenarios[scenario.name] = ScenarioResult(
                    scenario.name, scenario.server, scenario.title, skipped=why
                )
                run.progress(f"{scenario.title}: skipped, {why}")
                continue
            run.progress(f"{scenario.title}")
            report.scenarios[scenario.name] = run.measure(scenario, process)
            if scenario.name == _ONE_BRANCH and run.sidecars is not None:
                report.slowest_branch = measure_branch(run, scenario, run.sidecars.values["sim50"])
            if run.config.overload_on == scenario.name:
                report.overload = measure_overload(run, scenario, process)
        if name == "loopwise" and run.config.wants("storm") and run.context.identities:
            report.storm = measure_storm(run, process)
        if name == "loopwise" and run.config.wants("soak") and run.context.identities:
            report.soak = measure_soak(run, process)
        memory.unwatch(name)
    report.shutdown[name] = {"seconds": process.stop_seconds, "exit_code": process.exit_code}


def log_in(base_url: str, context: PlanContext) -> PlanContext:
    """``context`` with a session token for each of its users, from loopwise at ``base_url``."""
    out = []
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        for identity in context.identities:
            body = {"email": user_email(identity.user_id), "password": BENCH_PASSWORD}
            response = client.post("/login", json=body)
            response.raise_for_status()
            out.append(Identity(identity.user_id, response.json()["access_token"]))
    return PlanContext(identities=out, password=BENCH_PASSWORD, email_of=user_email)


def measure_branch(run: Run, scenario: Scenario, sim_url: str) -> PacedResult:
    """The overview's slowest branch alone: the 50 ms simulator at the overview's rate.

    What a client sees of it (the simulator's own server, loopback, timer rounding), in the
    same run: the floor the overview's p50 is compared with.
    """
    c = run.config
    rate = min(c.rate, scenario.rate or c.rate)
    connections = scenario.paced_connections or c.paced_connections
    run.progress(f"  its slowest branch alone: GET /loyalty/1 on the 50 ms simulator at {rate:g}/s")
    branch = run_paced(
        run.generator,
        sim_url,
        RequestPlan([Request("GET", "/loyalty/1")]),
        rate=rate,
        connections=connections,
        seconds=c.paced_seconds,
    )
    run.progress(f"    p50 {branch.latency_us.get('p50', 0) / 1000:,.2f} ms")
    return branch


def measure_overload(run: Run, scenario: Scenario, process: ServerProcess) -> OverloadResult:
    c = run.config
    return run_overload(
        run.generator,
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


def measure_storm(run: Run, process: ServerProcess) -> StormResult:
    c = run.config
    # Half the constant rate: the reads must stay below what two cores serve while argon2
    # takes its share, or the figure measures a queue, not the storm's interference.
    rate = c.rate / 2
    time.sleep(c.settle_seconds)
    run.progress(f"registration storm beside GET /users/{{id}} at {rate:,.0f} req/s")
    result = run_storm(
        run.generator,
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


def measure_soak(run: Run, process: ServerProcess) -> SoakResult:
    c = run.config
    mixed = SCENARIOS["mixed"]
    rate = min(c.rate, mixed.rate or c.rate)
    time.sleep(c.settle_seconds)
    run.progress(f"soak: {mixed.title} at {rate:,.0f} req/s for {c.soak_seconds:,.0f} s")
    result = run_soak(
        run.generator,
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
