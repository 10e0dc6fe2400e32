"""One server's turn in a run: start it, log the users in, measure its scenarios, stop it.

Loopwise's turn also carries the studies that need a running loopwise (overload on the
configured scenario, the registration storm, the soak). A scenario whose table or
endpoint the server lacks is reported as skipped, with the reason.
"""

from __future__ import annotations

import shutil

import httpx

from loopwise_bench.database import has_tables
from loopwise_bench.memory import MemorySampler
from loopwise_bench.results import BenchReport, ScenarioResult
from loopwise_bench.scenarios import SERVERS, Identity, PlanContext, Scenario
from loopwise_bench.seed import user_email
from loopwise_bench.servers import ServerProcess
from loopwise_bench.studies import measure_overload, measure_soak, measure_storm
from loopwise_bench.sweep import BENCH_PASSWORD, Run

__all__ = ["run_server"]


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
                report.overload = measure_overload(run, scenario, process)
        if name == "loopwise" and run.config.wants("storm") and run.context.identities:
            report.storm = measure_storm(run, process)
        if name == "loopwise" and run.config.wants("soak") and run.context.identities:
            report.soak = measure_soak(run, process)
        memory.unwatch(name)
    report.shutdown[name] = {"seconds": process.stop_seconds, "exit_code": process.exit_code}


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
