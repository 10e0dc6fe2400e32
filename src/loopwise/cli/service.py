"""``loopwise serve`` and ``loopwise migrate``: run the service, and prepare its database.

``serve`` also sets up what its worker processes inherit: the open-files limit, and the
shared directory for multiprocess metrics.
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import sys

from loopwise.cli.startup import apply_migrations, database, validated_settings
from loopwise.service.logs import get_logger
from loopwise.service.settings import Settings

__all__ = ["migrate", "serve"]

_log = get_logger("loopwise.cli")


def serve() -> None:
    """Run the HTTP service (granian) on LOOPWISE_HOST:LOOPWISE_PORT.

    Without LOOPWISE_DATABASE_URL it starts an embedded PostgreSQL in LOOPWISE_DATA_DIR,
    applies migrations, and stops the database again on exit. SIGTERM first drains:
    /readyz answers 503 for LOOPWISE_DRAIN_DELAY seconds while serving continues; then
    (or at once on SIGINT) the server stops accepting, lets in-flight requests finish
    within LOOPWISE_SHUTDOWN_GRACE seconds, and closes the pool.
    """
    from granian import Granian
    from granian.constants import Interfaces, Loops

    settings = validated_settings()
    with database(settings) as dsn:
        if settings.should_migrate_on_start:
            apply_migrations(settings.direct_dsn(dsn))  # never through a pooler
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
            # Each worker drains (service/http/drain.py), then finishes in-flight requests within
            # the grace; granian kills a worker that is still running past this.
            workers_kill_timeout=max(1, math.ceil(settings.drain_delay + settings.shutdown_grace)),
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


def migrate() -> None:
    """Apply database migrations up to the newest revision.

    Safe to run repeatedly and from several processes at once (they serialise on a
    PostgreSQL advisory lock). Uses the embedded PostgreSQL when no URL is set.
    """
    settings = validated_settings()
    with database(settings) as dsn:
        apply_migrations(settings.direct_dsn(dsn))  # never through a pooler
        _log.info("migrated")
