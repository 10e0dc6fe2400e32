"""The request id: bound for every log line while the request runs, unbound after."""

from __future__ import annotations

import pytest
import structlog
from starlette.types import Message, Receive, Scope, Send

from loopwise.service.http.middleware import RequestLog


def _scope(headers: list[tuple[bytes, bytes]]) -> Scope:
    return {"type": "http", "method": "GET", "path": "/x", "headers": headers}


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def test_request_id_is_bound_while_the_request_runs() -> None:
    """Lines logged during the request carry its id; what was bound before is back after."""
    seen: list[dict[str, object]] = []
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(structlog.contextvars.get_contextvars())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: Message) -> None:
        sent.append(message)

    logged = RequestLog(app)
    await logged(_scope([(b"x-request-id", b"abc-123")]), _receive, send)
    assert seen[-1] == {"request_id": "abc-123"}
    assert structlog.contextvars.get_contextvars() == {}
    with structlog.contextvars.bound_contextvars(request_id="outer", user="u"):
        await logged(_scope([]), _receive, send)
        assert structlog.contextvars.get_contextvars() == {"request_id": "outer", "user": "u"}
    minted = seen[-1]["request_id"]
    assert isinstance(minted, str)
    assert len(minted) == 16
    assert seen[-1]["user"] == "u"
    assert (b"x-request-id", minted.encode()) in sent[-2]["headers"]


async def test_request_id_is_unbound_when_the_app_raises() -> None:
    """An exception out of the app still leaves the context as it found it."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    async def send(message: Message) -> None:
        pass

    with pytest.raises(RuntimeError, match="boom"):
        await RequestLog(app)(_scope([]), _receive, send)
    assert structlog.contextvars.get_contextvars() == {}
