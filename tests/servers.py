"""Serve an ASGI app on a real 127.0.0.1 port inside the test's own event loop.

    async with serve_asgi(app) as base_url:          # "http://127.0.0.1:54321"
        async with httpx.AsyncClient(base_url=base_url) as client: ...

The listening socket is bound and listening before the server task starts, so clients can
connect at once (the kernel queues them until uvicorn accepts): no polling for "started".
Leaving the block stops the server; requests still hanging are cancelled after a short
grace. ``closed_port()`` gives an address that refuses connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

__all__ = ["closed_port", "serve_asgi"]


@contextlib.asynccontextmanager
async def serve_asgi(app: Any, *, lifespan: bool = False) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 for the duration of the block; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit this. Without it every response uvicorn writes in two parts
    # (head, then body) waits out the client's delayed ACK: ~45 ms per request, measured.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="on" if lifespan else "off",
        log_config=None,  # leave the process's logging alone
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
        backlog=1024,
    )
    server = uvicorn.Server(config)
    async with asyncio.TaskGroup() as group:
        group.create_task(server.serve(sockets=[sock]))
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
    sock.close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released without listening)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
