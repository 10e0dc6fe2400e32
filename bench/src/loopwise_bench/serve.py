"""Serve one app under test with granian: ``python -m loopwise_bench.serve TARGET PORT WORKERS``.

Every server in a run (the bare baselines, the naive version, loopwise itself) starts
through this one function, so they share every server setting: the same granian, the
same interface, event loop and worker count, no access log: the options of
``loopwise serve``, through the service's own launcher.
"""

from __future__ import annotations

import sys

__all__ = ["main", "serve"]


def serve(target: str, port: int, workers: int) -> None:
    """Serve the ASGI factory ``target`` ("module:function") on 127.0.0.1:``port``."""
    from loopwise.service.serving import serve_with_granian
    from loopwise.service.settings import load_settings

    # The same connection limits as `loopwise serve`, for every server measured.
    serve_with_granian(target, load_settings(), host="127.0.0.1", port=port, workers=workers)


def main() -> None:
    target, port, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    serve(target, port, workers)


if __name__ == "__main__":
    main()
