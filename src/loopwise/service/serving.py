"""Serve an ASGI app factory with granian: the one place the server's options are set.

    serve_with_granian("loopwise.service.app:create_app_from_env", settings)
    serve_with_granian("my.bench.app:create_app", settings, host="127.0.0.1", port=0)

``loopwise serve``, the benchmark's servers and the downstream simulator all start
through here, so whatever the benchmark measures is served exactly as production is.
"""

from __future__ import annotations

import math
import sys

from loopwise.service.settings import Settings

__all__ = ["serve_with_granian"]


def serve_with_granian(
    target: str,
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
) -> None:
    """Serve the ASGI factory ``target`` ("module:function") until SIGTERM or SIGINT.

    Args:
        target: the factory each worker process imports and calls.
        settings: connection limits, shutdown grace, and by default the address,
            port and worker count.
        host: the address to listen on instead of ``settings.host``.
        port: the port instead of ``settings.port``.
        workers: the worker processes instead of ``settings.workers``.
    """
    from granian import Granian
    from granian.constants import Interfaces, Loops

    Granian(
        target,
        factory=True,
        address=settings.host if host is None else host,
        port=settings.port if port is None else port,
        interface=Interfaces.ASGI,
        workers=settings.workers if workers is None else workers,
        loop=Loops.uvloop if sys.platform != "win32" else Loops.asyncio,
        log_access=False,  # our RequestLog middleware writes one structured line instead
        # Granian's own lines go to the root logger, so they come out in our format.
        log_dictconfig={
            "version": 1,
            "disable_existing_loggers": False,
            "loggers": {"_granian": {"handlers": [], "propagate": True}},
        },
        # Each worker drains (service/drain.py), then finishes in-flight requests within
        # the grace; granian kills a worker that is still running past this.
        workers_kill_timeout=max(1, math.ceil(settings.drain_delay + settings.shutdown_grace)),
        # Granian's backpressure caps the connections a worker holds open (its permit
        # lasts as long as the connection), by default backlog/workers = 512; past it
        # new connections wait unaccepted in the listen queue, /healthz probes too.
        # Admission control bounds the requests instead (LOOPWISE_MAX_IN_FLIGHT).
        backlog=settings.listen_backlog,
        backpressure=settings.max_connections,
    ).serve()
