"""The hot reads' own handlers answer exactly as FastAPI's: a differential test.

The same requests go to the app as served (``accounts/hot_reads.py``) and to one built
with ``hot_reads=False`` (FastAPI's handlers), on the same database; every status, header
(but the request id) and body must be equal.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from loopwise.service.accounts import users
from loopwise.service.app import create_app
from loopwise.service.settings import Settings
from tests.service.accounts.conftest import Account, MakeAccount

BIGINT_MAX = 2**63 - 1


@pytest.fixture
async def fastapi_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with FastAPI's own handlers of the hot reads."""
    application: FastAPI = create_app(settings, hot_reads=False)
    async with LifespanManager(application) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://loopwise.test") as c:
            yield c


def _answer(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = [(k, v) for k, v in response.headers.multi_items() if k != "x-request-id"]
    return response.status_code, headers, response.content


async def _sql(database_url: str, query: str, *args: object) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(query, *args)
    finally:
        await conn.close()


def _paths(own: int, other: int) -> list[str]:
    ids = [
        str(own),
        str(other),
        "0",
        "-1",
        f"0{own}",
        f"+{own}",
        f"%20{own}",
        f"{own}%20",
        f"{own}.0",
        "1e3",
        "abc",
        "",
        str(BIGINT_MAX),
        str(BIGINT_MAX + 1),
        "9" * 25,
        f"{own}_0",
    ]
    return [f"/users/{i}" for i in ids] + ["/users/me", "/users/me/preferences"]


async def _tokens(make_account: MakeAccount, database_url: str) -> dict[str, Account | str]:
    """Callers of every kind: valid, unverified, and tokens that must be refused."""
    expired, revoked, disabled, deleted = [await make_account() for _ in range(4)]
    await _sql(
        database_url,
        "UPDATE sessions SET expires_at = now() - interval '1 s' WHERE user_id = $1",
        expired.id,
    )
    await _sql(
        database_url, "UPDATE sessions SET revoked_at = now() WHERE user_id = $1", revoked.id
    )
    await _sql(database_url, "UPDATE users SET disabled_at = now() WHERE id = $1", disabled.id)
    await _sql(database_url, "DELETE FROM users WHERE id = $1", deleted.id)
    return {
        "valid": await make_account(),
        "unverified": await make_account(verified=False),
        "expired": expired,
        "revoked": revoked,
        "disabled": disabled,
        "deleted": deleted,
        "none": "",
        "garbled": "Bearer not-a-token",
        "empty": "Bearer ",
        "basic": "Basic YTpi",
        "lowercase": "",  # filled below: the valid token under `bearer`
    }


async def test_hot_reads_answer_as_fastapi_does(
    client: httpx.AsyncClient,
    fastapi_client: httpx.AsyncClient,
    make_account: MakeAccount,
    database_url: str,
) -> None:
    tokens = await _tokens(make_account, database_url)
    valid = tokens["valid"]
    assert isinstance(valid, Account)
    tokens["lowercase"] = f"bearer  {valid.token}"
    other = await make_account()
    # Preferences: one caller with defaults (no row), one with a stored document.
    stored = await client.put(
        "/users/me/preferences",
        json={"theme": "dark", "language": "pt-BR", "page_size": 50},
        headers=other.overwriting,
    )
    assert stored.status_code == 200, stored.text
    tokens["stored"] = other
    me = await client.get("/users/me", headers=valid.headers)
    prefs = await client.get("/users/me/preferences", headers=other.headers)
    conditions = [
        {},
        {"If-None-Match": me.headers["etag"]},
        {"If-None-Match": prefs.headers["etag"]},
        {"If-None-Match": f'W/{me.headers["etag"]}, "x"'},
        {"If-None-Match": '"u1.999"'},
        {"If-None-Match": "*"},
        {"If-None-Match": "garbage"},
    ]
    compared = 0
    for (kind, token), path, condition, method in itertools.product(
        tokens.items(), _paths(valid.id, other.id), conditions, ("GET", "HEAD")
    ):
        headers = dict(condition)
        if isinstance(token, Account):
            headers["Authorization"] = f"Bearer {token.token}"
        elif token:
            headers["Authorization"] = token
        ours = await client.request(method, path, headers=headers)
        theirs = await fastapi_client.request(method, path, headers=headers)
        assert _answer(ours) == _answer(theirs), (kind, method, path, condition)
        compared += 1
    assert compared == 12 * 18 * 7 * 2


def test_each_app_has_its_own_routes(settings: Settings) -> None:
    """Building an app with the hot reads leaves the routers' shared routes, and the
    OpenAPI document, as FastAPI made them."""

    def apps() -> dict[int, object]:
        return {id(r): r.app for r in users.router.routes if isinstance(r, APIRoute)}

    declared = apps()

    def read_me(application: FastAPI) -> object:
        return next(
            route.app
            for route in application.router.routes
            if isinstance(route, APIRoute) and route.endpoint is users.read_me
        )

    served = create_app(settings)
    plain = create_app(settings, hot_reads=False)
    assert apps() == declared
    assert read_me(plain) in declared.values()
    assert read_me(served) not in declared.values()
    # The same document, byte for byte, as /openapi.json serves it.
    assert JSONResponse(served.openapi()).body == JSONResponse(plain.openapi()).body
