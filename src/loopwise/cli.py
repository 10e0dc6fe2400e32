"""The ``loopwise`` command.

Every subcommand validates settings first; a bad value ends it with one line naming the
setting and the rule, and exit status 2, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import resource
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import asyncpg
import typer

from loopwise.service.db import EmbeddedUnavailable, embedded_postgres
from loopwise.service.logs import configure_logging, get_logger
from loopwise.service.settings import InvalidSettings, Settings, load_settings

__all__ = ["app", "main"]

app = typer.Typer(
    name="loopwise",
    help="An async account service on PostgreSQL, and the async patterns it is built on.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_log = get_logger("loopwise.cli")

T = TypeVar("T")


def _fail(message: str, status: int = 2) -> NoReturn:
    typer.echo(f"loopwise: {message}", err=True)
    raise typer.Exit(status)


def _settings() -> Settings:
    try:
        settings = load_settings()
    except InvalidSettings as exc:
        _fail(f"invalid setting: {exc}")
    configure_logging(settings.log_format, settings.log_level)
    return settings


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[str]:
    """Yield the DSN to use: the configured URL, or an embedded PostgreSQL's."""
    if settings.database_url is not None:
        yield str(settings.database_url)
        return
    try:
        with embedded_postgres(settings.data_dir) as dsn:
            _log.info("embedded_postgres_started", data_dir=str(settings.data_dir))
            yield dsn
            _log.info("embedded_postgres_stopping")
    except EmbeddedUnavailable as exc:
        _fail(str(exc))


def _migrate(dsn: str) -> None:
    from loopwise.service.migrate import migrate

    try:
        migrate(dsn)
    except OSError as exc:
        _fail(f"cannot reach PostgreSQL to migrate: {exc}", status=1)


@app.command()
def serve() -> None:
    """Run the HTTP service (granian) on LOOPWISE_HOST:LOOPWISE_PORT.

    Without LOOPWISE_DATABASE_URL it starts an embedded PostgreSQL in LOOPWISE_DATA_DIR,
    applies migrations, and stops the database again on exit. SIGTERM or SIGINT stops
    accepting, lets in-flight requests finish within LOOPWISE_SHUTDOWN_GRACE seconds,
    then closes the pool.
    """
    from granian import Granian
    from granian.constants import Interfaces, Loops

    settings = _settings()
    with _database(settings) as dsn:
        if settings.should_migrate_on_start:
            _migrate(dsn)
        # Workers are separate processes that build the app from the environment.
        os.environ["LOOPWISE_DATABASE_URL"] = dsn
        if settings.workers > 1:
            _share_metrics(settings)
        _raise_open_files(settings.max_connections)
        _log.info("serving", host=settings.host, port=settings.port, workers=settings.workers)
        Granian(
            "loopwise.service.app:create_app_from_env",
            factory=True,
            address=settings.host,
            port=settings.port,
            interface=Interfaces.ASGI,
            workers=settings.workers,
            loop=Loops.uvloop if sys.platform != "win32" else Loops.asyncio,
            log_access=False,  # our RequestLog middleware writes one structured line instead
            # Granian's own lines go to the root logger, so they come out in our format.
            log_dictconfig={
                "version": 1,
                "disable_existing_loggers": False,
                "loggers": {"_granian": {"handlers": [], "propagate": True}},
            },
            workers_kill_timeout=max(1, math.ceil(settings.shutdown_grace)),
            # Granian's backpressure caps the connections a worker holds open (its permit
            # lasts as long as the connection), by default backlog/workers = 512; past it
            # new connections wait unaccepted in the listen queue, /healthz probes too.
            # Admission control bounds the requests instead (LOOPWISE_MAX_IN_FLIGHT).
            backlog=settings.listen_backlog,
            backpressure=settings.max_connections,
        ).serve()


def _raise_open_files(connections: int) -> None:
    """Let each worker hold ``connections`` sockets plus its own files (pool, logs).

    The soft limit is often 1024; the hard limit is what an unprivileged process may ask.
    """
    wanted = connections + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < ceiling:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
    if ceiling < wanted:
        _log.warning("open_files_limited", limit=ceiling, wanted=wanted, hint="ulimit -Hn")


def _share_metrics(settings: Settings) -> None:
    """Let every worker's metrics reach /metrics, whichever worker answers the scrape.

    prometheus_client's multiprocess mode: workers write values to files in this
    directory, read together at scrape time. It must be set before a worker imports
    prometheus_client, and start empty, or a previous run's counters would leak in.
    """
    directory = settings.data_dir.resolve() / "metrics"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


@app.command()
def migrate() -> None:
    """Apply database migrations up to the newest revision.

    Safe to run repeatedly and from several processes at once (they serialise on a
    PostgreSQL advisory lock). Uses the embedded PostgreSQL when no URL is set.
    """
    settings = _settings()
    with _database(settings) as dsn:
        _migrate(dsn)
        _log.info("migrated")


@app.command()
def bench(
    quick: Annotated[
        bool, typer.Option("--quick", help="Seconds per scenario: a smoke test.")
    ] = False,
    database_url: Annotated[
        str | None,
        typer.Option(help="A PostgreSQL URL whose role may create databases; default: embedded."),
    ] = None,
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
) -> None:
    """Benchmark loopwise against bare baselines and the seed's naive version.

    Starts everything on 127.0.0.1 (PostgreSQL, the servers, a slow target for the
    outbound fan-out), seeds 10K users and 100K orders, drives load with wrk, stops it
    all, and writes report.json, report.md and PNG charts into --out.
    """
    from loopwise.bench import BenchConfig, LoadGeneratorMissing, run_bench, write_report

    settings = _settings()
    # The harness's own readiness polls would log every request at INFO.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    preset = BenchConfig.quick if quick else BenchConfig.full
    overrides: dict[str, object] = {
        "database_url": database_url or settings.database_url,
        "data_dir": settings.data_dir,
        "out_dir": out,
    }
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
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted; every server it started has been stopped", status=130)
    for path in write_report(report, out):
        typer.echo(str(path))


@app.command("downstream-sim")
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
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from pydantic import ValidationError

    from loopwise.sim.app import CONFIG_ENV, SimConfig

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
        _fail(f"invalid option: {errors}")
    # The worker process builds the app from the environment, like `serve` does.
    os.environ[CONFIG_ENV] = config.model_dump_json()
    _log.info("downstream_sim_serving", host=host, port=port, **config.model_dump())
    Granian(
        "loopwise.sim.app:app_from_env",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=1,
        loop=Loops.uvloop if sys.platform != "win32" else Loops.asyncio,
        log_access=False,
    ).serve()


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, max=256, help="Jobs run at once; default LOOPWISE_JOBS_CONCURRENCY."),
    ] = None,
) -> None:
    """Run background jobs (the welcome email) until SIGTERM or SIGINT.

    Start as many as the load needs, on any machines that reach the database: they share
    the queue through PostgreSQL alone. On SIGTERM a worker stops claiming, lets running
    jobs finish within LOOPWISE_SHUTDOWN_GRACE seconds and hands the rest back. Set
    LOOPWISE_JOBS_IN_PROCESS=false on `serve` when these run the jobs instead.
    """
    from loopwise.service.jobs.process import run_worker_process

    settings = _settings()
    if concurrency is not None:
        settings = settings.model_copy(update={"jobs_concurrency": concurrency})
    with _database(settings) as dsn:
        if settings.should_migrate_on_start:
            _migrate(dsn)
        asyncio.run(run_worker_process(settings, dsn))


jobs_app = typer.Typer(
    help="Inspect the job queue; retry or discard dead jobs.", no_args_is_help=True
)
app.add_typer(jobs_app, name="jobs")


def _with_connection(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    async def run(dsn: str) -> T:
        conn = await asyncpg.connect(dsn, timeout=settings.db_acquire_timeout + 3)
        try:
            return await work(conn)
        finally:
            await conn.close()

    with _database(settings) as dsn:
        try:
            return asyncio.run(run(dsn))
        except OSError as exc:
            _fail(f"cannot reach PostgreSQL: {exc}", status=1)


@jobs_app.command("counts")
def jobs_counts() -> None:
    """How many jobs are queued, running, done and dead."""
    from loopwise.service.jobs import count_by_state

    counts = _with_connection(_settings(), count_by_state)
    for state, count in counts.items():
        typer.echo(f"{state:<8} {count}")


@jobs_app.command("dead")
def jobs_dead(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Show at most this many.")] = 50,
) -> None:
    """Dead jobs, newest first, with the error of their last attempt."""
    from loopwise.service.jobs import list_dead

    dead = _with_connection(_settings(), lambda conn: list_dead(conn, limit=limit))
    if not dead:
        typer.echo("no dead jobs")
    for job in dead:
        when = job.finished_at.isoformat(timespec="seconds")
        typer.echo(f"{job.id}\t{job.kind}\tattempts={job.attempts}\t{when}\t{job.last_error}")


def _selection(ids: list[int] | None, all_: bool) -> list[int] | None:
    if bool(ids) == all_:
        _fail("name the dead jobs' ids, or pass --all (not both)")
    return None if all_ else ids


_Ids = Annotated[list[int] | None, typer.Argument(help="Ids of dead jobs (see `jobs dead`).")]
_All = Annotated[bool, typer.Option("--all", help="Every dead job.")]


@jobs_app.command("retry")
def jobs_retry(
    ids: _Ids = None,
    all_: _All = False,
    attempts: Annotated[int, typer.Option(min=1, max=100, help="Fresh attempts each.")] = 3,
) -> None:
    """Requeue dead jobs with a fresh budget of attempts."""
    from loopwise.service.jobs import retry_dead

    chosen = _selection(ids, all_)
    count = _with_connection(_settings(), lambda c: retry_dead(c, chosen, attempts=attempts))
    typer.echo(f"requeued {count} dead job(s)")


@jobs_app.command("discard")
def jobs_discard(ids: _Ids = None, all_: _All = False) -> None:
    """Delete dead jobs for good."""
    from loopwise.service.jobs import discard_dead

    chosen = _selection(ids, all_)
    count = _with_connection(_settings(), lambda conn: discard_dead(conn, chosen))
    typer.echo(f"discarded {count} dead job(s)")


def main() -> None:
    app()
