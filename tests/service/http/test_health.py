"""Liveness, readiness, and the shape of errors on unknown routes."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
from asgi_lifespan import LifespanManager

from loopwise.service.app import create_app
from loopwise.service.settings import Settings
from tests.pg import database_name


async def test_healthz_answers(client: httpx.AsyncClient) -> None:
    """The liveness probe answers 200 while the process lives."""
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_ready_on_current_schema(client: httpx.AsyncClient) -> None:
    """Readiness is 200 once PostgreSQL answers and the schema is current."""
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


async def test_readyz_follows_the_database(
    client: httpx.AsyncClient, database_url: str, pg_admin_dsn: str
) -> None:
    """Readiness turns 503 when the database refuses connections and 200 when it is back."""
    name = database_name(database_url)
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        down = await client.get("/readyz")
        assert down.status_code == 503
        assert down.headers["content-type"] == "application/problem+json"
        assert "Retry-After" in down.headers
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        # A pooled connection the server ended may not be known dead yet when the next
        # probe takes it: that probe fails and drops it. Ready again within a few probes.
        async with asyncio.timeout(10):
            while (await client.get("/readyz")).status_code != 200:  # noqa: ASYNC110  # the pool learns it from PostgreSQL
                await asyncio.sleep(0.05)
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()


async def test_readyz_refuses_an_old_schema(client: httpx.AsyncClient, database_url: str) -> None:
    """Readiness is 503 when the database's schema is not the one this code expects."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE alembic_version SET version_num = 'older'")
    finally:
        await conn.close()
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert "older" in response.json()["detail"]


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    """Unknown paths get 404 and wrong methods 405, both as problem+json."""
    missing = await client.get("/no/such/thing")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    wrong = await client.delete("/healthz")
    assert wrong.status_code == 405
    assert wrong.json()["status"] == 405


async def test_request_id_echoed(client: httpx.AsyncClient) -> None:
    """A sane client request id is echoed; an insane one is replaced by our own."""
    mine = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert mine.headers["x-request-id"] == "abc-123"
    hostile = await client.get("/healthz", headers={"X-Request-ID": "a b\x7f" + "x" * 100})
    assert hostile.headers["x-request-id"] != "a b"
    assert len(hostile.headers["x-request-id"]) == 16


async def test_oversized_body_is_refused(client: httpx.AsyncClient) -> None:
    """A body over the limit gets 413 whether its length is declared or streamed."""
    declared = await client.post("/healthz", content=b"x" * (65 * 1024))
    assert declared.status_code == 413

    async def chunks() -> httpx.AsyncByteStream:  # type: ignore[misc]
        for _ in range(70):
            yield b"x" * 1024

    streamed = await client.post("/healthz", content=chunks())
    assert streamed.status_code in (405, 413)


async def test_unexpected_error_is_a_bare_500(settings: Settings) -> None:
    """A crash in a handler answers a bare problem+json 500: no trace, no exception text."""
    application = create_app(settings)

    async def crash() -> None:
        raise RuntimeError("SELECT secret FROM internals")

    application.add_api_route("/_crash", crash)
    async with LifespanManager(application) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/_crash")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
    }
    assert "secret" not in response.text


async def test_405_allows_every_method_of_the_resource(client: httpx.AsyncClient) -> None:
    """A wrong method on a resource served by two routes lists both in ``Allow``."""
    response = await client.put("/users/me")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET, HEAD, PATCH"


async def test_openapi_documents_problem_responses(client: httpx.AsyncClient) -> None:
    """The schema (built off the loop at start-up) says errors are problem+json, and 401
    where a bearer token is required."""
    schema = (await client.get("/openapi.json")).json()
    me = schema["paths"]["/users/me"]["get"]["responses"]
    assert {"304", "401", "503"} <= me.keys()
    assert "422" not in me  # nothing to validate: no parameters, no body
    assert list(me["401"]["content"]) == ["application/problem+json"]
    register = schema["paths"]["/register"]["post"]["responses"]
    assert "401" not in register
    assert register["409"]["content"]["application/problem+json"]["schema"] == {
        "$ref": "#/components/schemas/Problem"
    }
    assert "HTTPValidationError" not in schema["components"]["schemas"]
