"""``loopwise serve`` and ``loopwise migrate``: run the service, and prepare its database.

``serve`` also sets up what its worker processes inherit: the open-files limit, and the
shared directory for multiprocess metrics.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import socket

from loopwise.cli.startup import (
    apply_migrations,
    check_database,
    database,
    fail,
    validated_settings,
)
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
    # Before PostgreSQL starts: a mistake costs one line, not a database start and stop.
    _refuse_taken_port(settings.host, settings.port)
    with database(settings) as dsn:
        if settings.should_migrate_on_start:
            apply_migrations(settings.direct_dsn(dsn))  # never through a pooler
        check_database(settings.direct_dsn(dsn))
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


def _refuse_taken_port(host: str, port: int) -> None:
    """End ``serve`` with one line if anything already listens on ``host:port``.

    Granian listens with ``SO_REUSEPORT``, so a second ``loopwise serve`` on the same port
    would bind beside the first and the kernel would split connections between two
    services that may run different versions or settings. This probe binds *without*
    ``SO_REUSEPORT``, which Linux refuses while any socket listens there, reuse-port or
    not (socket(7)). ``SO_REUSEADDR`` keeps a restart from failing on the previous run's
    connections in TIME_WAIT. A process that binds in the moment between this probe and
    granian's own bind is not caught: the probe is for mistakes, not for races.
    """
    if port == 0:
        return  # the kernel picks a free port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror}", status=1)
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                fail(
                    f"cannot listen on {host}:{port}: the port is in use (another loopwise "
                    "or another program); stop it or set LOOPWISE_PORT",
                    status=1,
                )
            fail(f"cannot listen on {host}:{port}: {exc.strerror}", status=1)


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
