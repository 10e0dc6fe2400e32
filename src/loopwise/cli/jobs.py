"""``loopwise worker`` runs background jobs; ``loopwise jobs ...`` inspects their queue.

The ``jobs`` sub-app's commands (counts, dead, retry, discard) each open one connection,
do their one query and close it again.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from loopwise.cli.startup import (
    apply_migrations,
    database,
    fail,
    validated_settings,
    with_connection,
)

__all__ = ["jobs_app", "worker"]


def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, max=256, help="Jobs run at once; default LOOPWISE_JOBS_CONCURRENCY."),
    ] = None,
) -> None:
    """Run background jobs (the account emails) until SIGTERM or SIGINT.

    Start as many as the load needs, on any machines that reach the database: they share
    the queue through PostgreSQL alone. On SIGTERM a worker stops claiming, lets running
    jobs finish within LOOPWISE_SHUTDOWN_GRACE seconds and hands the rest back. Set
    LOOPWISE_JOBS_IN_PROCESS=false on `serve` when these run the jobs instead.
    """
    from loopwise.service.accounts.emails import account_job_handlers
    from loopwise.service.jobs.process import run_worker_process

    settings = validated_settings()
    if concurrency is not None:
        settings = settings.model_copy(update={"jobs_concurrency": concurrency})
    with database(settings) as dsn:
        if settings.should_migrate_on_start:
            apply_migrations(settings.direct_dsn(dsn))  # never through a pooler
        asyncio.run(run_worker_process(settings, dsn, account_job_handlers))


jobs_app = typer.Typer(
    help="Inspect the job queue; retry or discard dead jobs.", no_args_is_help=True
)


@jobs_app.command("counts")
def jobs_counts() -> None:
    """How many jobs are queued, running, done and dead."""
    from loopwise.service.jobs import count_by_state

    counts = with_connection(validated_settings(), count_by_state)
    for state, count in counts.items():
        typer.echo(f"{state:<8} {count}")


@jobs_app.command("dead")
def jobs_dead(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Show at most this many.")] = 50,
) -> None:
    """Dead jobs, newest first, with the error of their last attempt."""
    from loopwise.service.jobs import list_dead

    dead = with_connection(validated_settings(), lambda conn: list_dead(conn, limit=limit))
    if not dead:
        typer.echo("no dead jobs")
    for job in dead:
        when = job.finished_at.isoformat(timespec="seconds")
        typer.echo(f"{job.id}\t{job.kind}\tattempts={job.attempts}\t{when}\t{job.last_error}")


def _selection(ids: list[int] | None, all_: bool) -> list[int] | None:
    if bool(ids) == all_:
        fail("name the dead jobs' ids, or pass --all (not both)")
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
    count = with_connection(
        validated_settings(), lambda c: retry_dead(c, chosen, attempts=attempts)
    )
    typer.echo(f"requeued {count} dead job(s)")


@jobs_app.command("discard")
def jobs_discard(ids: _Ids = None, all_: _All = False) -> None:
    """Delete dead jobs for good."""
    from loopwise.service.jobs import discard_dead

    chosen = _selection(ids, all_)
    count = with_connection(validated_settings(), lambda conn: discard_dead(conn, chosen))
    typer.echo(f"discarded {count} dead job(s)")
