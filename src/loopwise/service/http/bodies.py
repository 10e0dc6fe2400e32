"""Read a request's body before it takes an admission slot, within a time bound.

    app.add_middleware(BodyFirst, timeout=5.0, max_readers=1024, max_bytes=65536)

Admission control bounds the requests the app works on at once (``admission.py``). A
request admitted before its body has arrived holds a slot while the client trickles
bytes, or sends none: 128 connections that sent ``Content-Length: 500`` and 17 bytes held
all 128 slots, and every other request got 503 for as long as they stayed open (one
held 150 s). Here a body is read first, with no slot held, and must arrive whole within
``LOOPWISE_BODY_TIMEOUT`` seconds, or the request gets 408 and its connection is closed
(RFC 9110 section 15.5.9). Only then does the request meet the gate, ready to run.

The readers have their own bound, ``LOOPWISE_MAX_BODY_READERS``: past it a request with
a body is answered 503 at once, unread. It bounds the memory buffered bodies take
(readers x ``LOOPWISE_MAX_BODY_BYTES``), and it is separate from the request limit, so
bodies still arriving never starve requests that are ready. Requests without a body
(most GETs) pass straight through. A body declared larger than ``max_bytes`` is not
read: the size limit inside answers 413 first.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loopwise.service.http.problems import MEDIA_TYPE, problem_body

__all__ = ["BodyFirst", "BodyReadStats"]


@dataclass(slots=True)
class BodyReadStats:
    """What the body readers are doing: read at metrics time, never counted for them."""

    reading: int = 0  # bodies arriving now
    timed_out: int = 0  # answered 408 since the process started
    refused: int = 0  # answered 503 because every reader was busy

    def stats(self) -> BodyReadStats:
        """Itself: the counts are read at metrics time (``Metrics.track("http_bodies", ...)``)."""
        return self


class BodyFirst:
    """Pure ASGI middleware: buffer each request body (bounded in time, count and size)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        timeout: float,
        max_readers: int,
        max_bytes: int,
        stats: BodyReadStats | None = None,
    ) -> None:
        if timeout <= 0 or max_readers < 1 or max_bytes < 1:
            raise ValueError("`timeout`, `max_readers` and `max_bytes` must be positive")
        self.app = app
        self.timeout = timeout
        self.max_readers = max_readers
        self.max_bytes = max_bytes
        self.stats = stats if stats is not None else BodyReadStats()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_body(scope["headers"])
        if declared is None or declared > self.max_bytes:
            # No body, or one the size limit refuses unread (or a malformed length, which
            # it answers 400): nothing to wait for.
            await self.app(scope, receive, send)
            return
        stats = self.stats
        if stats.reading >= self.max_readers:
            stats.refused += 1
            await _answer(send, 503, "Too many request bodies are arriving; retry shortly.")
            return
        stats.reading += 1
        try:
            messages = await self._read(receive)
        except TimeoutError:
            stats.timed_out += 1
            detail = f"The request body did not arrive within {self.timeout:g} s."
            await _answer(send, 408, detail)
            return
        finally:
            stats.reading -= 1
        buffered = iter(messages)

        async def replay() -> Message:
            # The body as it arrived, then whatever the server says next (a disconnect).
            for message in buffered:
                return message
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> list[Message]:
        messages: list[Message] = []
        received = 0
        async with asyncio.timeout(self.timeout):
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request":
                    return messages  # the client left; the app will see it
                received += len(message.get("body", b""))
                # Past max_bytes the size limit inside raises 413 as it replays.
                if not message.get("more_body", False) or received > self.max_bytes:
                    return messages


def _declared_body(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The body's declared length; 0 for chunked (unknown yet); None when there is none."""
    length: int | None = None
    for name, value in headers:
        if name == b"transfer-encoding":
            return 0
        if name == b"content-length":
            if not value.isdigit():
                return None  # malformed: the size limit answers 400
            length = int(value)
    return length or None


async def _answer(send: Send, status: int, detail: str) -> None:
    body = problem_body(status, detail)
    headers = [
        (b"content-type", MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        # The rest of the body may still be on its way: this connection is done.
        (b"connection", b"close"),
    ]
    if status == 503:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
