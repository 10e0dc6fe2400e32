"""Serve one app under test with granian: ``python -m loopwise_bench.serve TARGET PORT WORKERS``.

Every server in a run (the bare baselines, the naive version, loopwise itself) starts
through this one function, so they share every server setting: the same granian, the
same interface, event loop and worker count, no access log. The options mirror
``loopwise serve`` (``loopwise.cli.service.serve``); keep the two in step.
"""

from __future__ import annotations

import sys

__all__ = ["main", "serve"]


def serve(target: str, port: int, workers: int) -> None:
    """Serve the ASGI factory ``target`` ("module:function") on 127.0.0.1:``port``."""
    from granian import Granian
    from granian.constants import Interfaces, Loops

    from loopwise.service.settings import load_settings

    # The same connection limits as `loopwise serve`, for every server measured.
    settings = load_settings()
    Granian(
        target,
        factory=True,
        address="127.0.0.1",
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops.uvloop if sys.platform != "win32" else Loops.asyncio,
        log_access=False,
        backlog=settings.listen_backlog,
        backpressure=settings.max_connections,
    ).serve()


def main() -> None:
    target, port, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    serve(target, port, workers)


if __name__ == "__main__":
    main()
