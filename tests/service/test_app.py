"""The app's composition: its routes are registered flat, and FastAPI still treats them as its own.

``create_app`` puts the routers' routes straight on the app's router instead of calling
``include_router`` (measured: a third of the CPU of ``GET /users/{id}`` went to matching
through include_router's branches in FastAPI 0.165). These tests fail loudly when FastAPI
changes what that relies on.

Everything the request path needs is imported during start-up, off the loop: a first
request that imports a module stalls the loop for the import's duration.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.routing import APIRoute

from loopwise.service.accounts.routes import routers as account_routers
from loopwise.service.app import _add_routes, create_app
from loopwise.service.settings import Settings


def _router() -> APIRouter:
    router = APIRouter()

    @router.get("/things/{thing_id}")
    async def read_thing(thing_id: int, request: Request) -> dict[str, object]:
        route = request.scope["route"]
        return {"id": thing_id, "template": route.path_format}

    return router


def test_router_routes_are_plain_api_routes() -> None:
    """Every route an account router holds is an APIRoute the app's router can hold as is."""
    for router in account_routers:
        assert router.routes
        assert all(isinstance(route, APIRoute) for route in router.routes)


async def test_flat_routes_match_validate_and_name_their_template() -> None:
    """A flattened route matches, validates its parameters and sets scope["route"]."""
    app = FastAPI()
    _add_routes(app, _router())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ok = await client.get("/things/7")
        bad = await client.get("/things/seven")
    assert ok.json() == {"id": 7, "template": "/things/{thing_id}"}
    assert bad.status_code == 422


def test_flat_routes_give_the_same_openapi_as_include_router() -> None:
    """The schema of a flattened app is the schema include_router would have produced."""
    flat, included = FastAPI(), FastAPI()
    _add_routes(flat, *account_routers)
    for router in account_routers:
        included.include_router(router)
    assert flat.openapi()["paths"] == included.openapi()["paths"]


def test_routers_with_a_prefix_are_refused() -> None:
    """A prefix or router-level dependency would be lost by flattening, so it is refused."""
    with pytest.raises(ValueError, match="without a prefix"):
        _add_routes(FastAPI(), APIRouter(prefix="/v1"))


async def test_no_request_imports_a_module_after_start_up(
    database_url: str, tmp_path: Path
) -> None:
    """After start-up, serving each kind of request (2xx and errors) imports nothing new."""
    out = tmp_path / "imported.json"
    # A fresh interpreter: modules other tests imported would hide a lazy import here.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.service.first_requests",
        database_url,
        str(tmp_path),
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()[-3000:]
    imported = json.loads(await asyncio.to_thread(out.read_text))
    assert len(imported) >= 25  # every request ran
    assert {request: new for request, new in imported.items() if new} == {}


def test_documentation_routes_are_matched_last(settings: Settings) -> None:
    """The API's routes are matched first; the documentation's follow, and overlap none."""
    paths = [route.path for route in create_app(settings).router.routes]  # type: ignore[attr-defined]
    documentation = ["/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"]
    assert paths[-5:-1] == documentation
    assert paths[0] == "/register"
    assert not set(documentation) & set(paths[:-5])
