"""A bare ASGI app: no framework, no routing beyond two paths.

``GET /hello`` answers at once; ``GET /delay/{ms}`` answers after ``ms`` milliseconds,
which makes it the loopback "slow server" for the outbound fan-out scenario.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["create_app"]

_HEADERS = [(b"content-type", b"application/json")]
_HELLO = b'{"message":"hello"}'


def create_app() -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        path: str = scope["path"]
        status, body = 200, _HELLO
        if path.startswith("/delay/"):
            try:
                await asyncio.sleep(int(path.removeprefix("/delay/")) / 1000)
            except ValueError:
                status, body = 404, b'{"detail":"not found"}'
        elif path not in ("/hello", "/healthz"):
            status, body = 404, b'{"detail":"not found"}'
        await send({"type": "http.response.start", "status": status, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": body})

    return app
