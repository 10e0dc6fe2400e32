"""Pure ASGI middleware for what every response says about itself, and HEAD for every GET.

    app.add_middleware(HeadAsGet)         # inside the access log: it still logs "HEAD"
    app.add_middleware(SecurityHeaders)   # outermost: even the admission gate's 503 gets them

``SecurityHeaders`` adds, unless the app set its own:

- ``X-Content-Type-Options: nosniff``: browsers must not guess a type the server did not
  send (a problem+json body rendered as HTML is how reflected input becomes script).
- ``Cache-Control: no-store``: answers carry bearer tokens (``POST /login``) and personal
  data (``/users/me``, orders, preferences); no shared or browser cache may keep them
  (RFC 9111 section 5.2.2.5). Pages and assets that may be cached say so themselves.
- ``Content-Security-Policy: default-src 'none'; frame-ancestors 'none'``: a JSON API
  loads nothing and is framed by no one; the docs pages set their own policy.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HeadAsGet", "SecurityHeaders"]

_DEFAULTS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
)


class SecurityHeaders:
    """Add the headers above to every HTTP response that lacks them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(pair for pair in _DEFAULTS if pair[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HeadAsGet:
    """Answer ``HEAD`` wherever ``GET`` is served: the GET's status and headers, no body.

    RFC 9110 section 9.3.2: a server MUST support HEAD wherever it supports GET. FastAPI's
    routes list their methods literally (a GET route does not match HEAD, unlike a plain
    Starlette route), so HEAD met 405 with an ``Allow`` that named HEAD. The request runs
    as GET, and the body is dropped on the way out; ``Content-Length`` stays the GET's.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # the rest is dropped too; the last message ends the response
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        inner = {**scope, "method": "GET"}
        try:
            await self.app(inner, receive, send_without_body)
        finally:
            # The access log and metrics outside read the matched route from the scope.
            if "route" in inner:
                scope["route"] = inner["route"]
