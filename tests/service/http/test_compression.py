"""gzip for large responses to clients that accept it, and nothing for anyone else."""

from __future__ import annotations

import gzip

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from loopwise.service.http.compression import Compression, _accepts_gzip

LARGE, SMALL = "x" * 5000, "small"


async def _large(request: Request) -> PlainTextResponse:
    return PlainTextResponse(LARGE)


async def _small(request: Request) -> PlainTextResponse:
    return PlainTextResponse(SMALL)


def _client(app: ASGIApp) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


_ROUTES = [Route("/large", _large), Route("/small", _small)]


async def test_large_bodies_are_gzipped_when_accepted() -> None:
    """A body over the minimum goes out gzipped, with its new length and Vary."""
    app = Compression(Starlette(routes=_ROUTES), minimum_size=1024)
    async with _client(app) as client:
        response = await client.get("/large", headers={"Accept-Encoding": "gzip, br"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["vary"] == "Accept-Encoding"
    assert int(response.headers["content-length"]) < 100
    assert response.text == LARGE  # httpx decodes it


@pytest.mark.parametrize(
    ("path", "accept"),
    [("/small", "gzip"), ("/large", "identity"), ("/large", "gzip;q=0"), ("/large", "")],
)
async def test_small_bodies_and_other_clients_get_identity(path: str, accept: str) -> None:
    """Below the minimum, or when gzip is not accepted, the body goes out as it is."""
    app = Compression(Starlette(routes=_ROUTES), minimum_size=1024)
    async with _client(app) as client:
        response = await client.get(path, headers={"Accept-Encoding": accept})
    assert "content-encoding" not in response.headers
    assert response.text in (LARGE, SMALL)


async def test_other_clients_pass_straight_through() -> None:
    """Without gzip in Accept-Encoding the app gets the server's own send: no wrapper."""
    seen: list[Send] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(send)
        await PlainTextResponse(LARGE)(scope, receive, send)

    async with _client(Compression(app, minimum_size=1)) as client:
        await client.get("/", headers={"Accept-Encoding": "br"})
        packed = await client.get("/", headers={"Accept-Encoding": "gzip"})
    assert gzip.compress(LARGE.encode())  # sanity: the content compresses
    assert packed.headers["content-encoding"] == "gzip"
    assert seen[0].__qualname__ != seen[1].__qualname__  # only the gzip one is wrapped


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        (b"gzip", True),
        (b"deflate, gzip;q=1.0, *;q=0.5", True),
        (b"GZIP ; q=0.2", True),
        (b"gzip;q=0", False),
        (b"gzip; q=0.000", False),
        (b"gzip;q=bad", False),
        (b"x-gzip-ish", False),
    ],
)
def test_accept_encoding_weights(value: bytes, accepted: bool) -> None:
    """gzip with a weight above zero is accepted (RFC 9110 §12.5.3)."""
    assert _accepts_gzip(value) is accepted


def test_starlette_responder_still_has_what_we_drive() -> None:
    """Compression drives GZipResponder through `send` and `send_with_compression`: if a
    Starlette release renames them, this fails before any response does."""
    from starlette.middleware.gzip import GZipResponder

    responder = GZipResponder(Starlette(), 1024, compresslevel=6)
    assert hasattr(responder, "send")
    assert callable(responder.send_with_compression)


async def test_declared_small_response_skips_the_responder() -> None:
    """A response whose Content-Length is under the minimum goes out untouched, no Vary."""
    app = Compression(Starlette(routes=_ROUTES), minimum_size=1024)
    async with _client(app) as client:
        response = await client.get("/small", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in response.headers
    assert "vary" not in response.headers
    assert response.text == SMALL


async def test_streamed_large_body_is_compressed() -> None:
    """A body without a declared length is compressed as it streams."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(5):
            await send({"type": "http.response.body", "body": b"y" * 1000, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async with _client(Compression(app, minimum_size=1024)) as client:
        response = await client.get("/", headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.content == b"y" * 5000


def test_minimum_size_must_be_positive() -> None:
    """A minimum of 0 is a configuration mistake: the app turns compression off instead."""
    with pytest.raises(ValueError, match="minimum_size"):
        Compression(Starlette(), minimum_size=0)
