"""The studies beside the scenario sweep: overload, the registration storm, the soak, fan-out.

Each runs its measurement (``overload.py``, ``storm.py``, ``soak.py``, ``fanout.py``) with
the run's settings, against the server the runner has started (fan-out starts its own
slow target), and reports progress as it goes.
"""

from __future__ import annotations

import time

from loopwise_bench.fanout import run_fanout
from loopwise_bench.overload import OverloadResult, run_overload
from loopwise_bench.results import BenchReport
from loopwise_bench.scenarios import SCENARIOS, SERVERS, Scenario
from loopwise_bench.servers import ServerProcess
from loopwise_bench.soak import SoakResult, run_soak
from loopwise_bench.storm import StormResult, run_storm
from loopwise_bench.sweep import Run

__all__ = ["measure_fanout", "measure_overload", "measure_soak", "measure_storm"]


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


def measure_fanout(run: Run, report: BenchReport) -> None:
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
