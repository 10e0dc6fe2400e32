"""``loopwise serve`` and ``loopwise migrate``: run the service, and prepare its database.

``serve`` also sets up what its worker processes inherit: the open-files limit, and the
shared directory for multiprocess metrics.
"""

from __future__ import annotations

import os
import resource
import shutil

from loopwise.cli.startup import apply_migrations, database, validated_settings
from loopwise.service.logs import get_logger
from loopwise.service.serving import serve_with_granian
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
    settings = validated_settings()
    with database(settings) as dsn:
        if settings.should_migrate_on_start:
            apply_migrations(settings.direct_dsn(dsn))  # never through a pooler
        # Workers are separate processes that build the app from the environment.
        os.environ["LOOPWISE_DATABASE_URL"] = dsn
        if "public_url" not in settings.model_fields_set:
            # Links in emails then point at this server as configured (never at a
            # request's Host header); production sets LOOPWISE_PUBLIC_URL.
            os.environ["LOOPWISE_PUBLIC_URL"] = _own_url(settings)
        if settings.workers > 1:
            _share_metrics(settings)
        _raise_open_files(settings.max_connections)
        _log.info("serving", host=settings.host, port=settings.port, workers=settings.workers)
        serve_with_granian("loopwise.service.app:create_app_from_env", settings)


def _own_url(settings: Settings) -> str:
    host = settings.host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a comparison, not a bind
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


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
