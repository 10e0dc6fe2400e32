"""One run's state, and the sweep that measures a scenario against a running server.

A scenario is measured in a closed loop at each concurrency (throughput), then at a
constant rate (latency); an endpoint too slow for a closed loop gets its constant rate
first.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from loopwise_bench.config import BenchConfig
from loopwise_bench.generators import LoadGenerator, run_closed, run_paced
from loopwise_bench.loadgen import PacedResult, RequestPlan
from loopwise_bench.results import ScenarioResult
from loopwise_bench.scenarios import PlanContext, Scenario
from loopwise_bench.seed import user_email
from loopwise_bench.servers import ServerProcess
from loopwise_bench.sidecars import Sidecars

__all__ = ["BENCH_PASSWORD", "Run"]

BENCH_PASSWORD = "bench-password-1234"  # noqa: S105 -- the seeded users' known password


class Run:
    """The state of one run: the report so far and what the scenarios draw on."""

    def __init__(
        self, config: BenchConfig, generator: LoadGenerator, progress: Callable[[str], None]
    ) -> None:
        self.config = config
        self.generator = generator
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
        # the load generator has gone: measure its constant rate first, after a gentle warm-up.
        slow = scenario.max_connections is not None
        if c.warmup_seconds:
            warm = 2 if slow else min(16, cap)
            run_closed(self.generator, server.url, plan, connections=warm, seconds=c.warmup_seconds)
        if slow:
            result.paced = self._paced(scenario, server, plan, rate, paced_connections)
        for connections in concurrencies:
            closed = run_closed(
                self.generator,
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
            self.generator,
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
