"""gzip for large responses, when the client accepts it; nothing at all otherwise.

    app.add_middleware(Compression, minimum_size=settings.gzip_min_bytes)

Starlette's ``GZipMiddleware`` wraps every request in a responder that parses the response
headers, even when the client accepts no compression (the benchmark's load generator, most
service-to-service callers). This checks ``Accept-Encoding`` in the raw request headers and
hands only the requests that accept gzip to Starlette's ``GZipResponder``: the others pass
straight through, one header scan. ``/openapi.json`` (about 50 KB) goes out as about 5 KB.

Level 6, zlib's default, not Starlette's 9: for JSON it gives nearly the same size at a
fraction of the CPU, and the compression runs on the event loop below 128 KiB.
"""

from __future__ import annotations

from starlette.middleware.gzip import GZipResponder
from starlette.types import ASGIApp, Receive, Scope, Send

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
                    responder = GZipResponder(self.app, self.minimum_size, compresslevel=_LEVEL)
                    await responder(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _accepts_gzip(value: bytes) -> bool:
    """Whether an ``Accept-Encoding`` value lists gzip with a weight above 0 (RFC 9110 §12.5.3)."""
    for item in value.lower().split(b","):
        coding, _, parameters = item.partition(b";")
        if coding.strip() == b"gzip":
            weight = parameters.strip().removeprefix(b"q=")
            try:
                return not parameters.strip() or float(weight) > 0
            except ValueError:
                return False
    return False
