"""The overview with real downstream services: parts arrive, or degrade on time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from asgi_lifespan import LifespanManager

from loopwise.service.app import create_app
from loopwise.service.settings import Settings
from loopwise_bench.sim import SimConfig, create_sim_app
from tests.servers import closed_port, serve_asgi
from tests.service.accounts.conftest import mark_verified

PASSWORD = "correct horse battery"


@contextlib.asynccontextmanager
async def overview_client(
    settings: Settings, **downstreams: object
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with the given downstream settings, and a user with two orders logged in."""
    app = create_app(settings.model_copy(update=downstreams))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body = {"email": "ada@example.com", "password": PASSWORD, "display_name": "Ada"}
            registered = await client.post("/register", json=body)
            assert registered.status_code == 201
            assert settings.database_url is not None
            await mark_verified(settings.database_url, registered.json()["id"])
            login = await client.post("/login", json={"email": body["email"], "password": PASSWORD})
            client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
            for sku in ("tea", "cup"):
                order = {"items": [{"sku": sku, "quantity": 1, "unit_price_cents": 250}]}
                assert (await client.post("/users/me/orders", json=order)).status_code == 201
            yield client


async def test_overview_includes_healthy_downstreams(settings: Settings) -> None:
    """Loyalty points and one shipment per recent order arrive; nothing is degraded."""
    sim = create_sim_app(SimConfig(latency_ms=5))
    async with (
        serve_asgi(sim) as url,
        overview_client(settings, loyalty_url=url, shipments_url=url) as client,
    ):
        overview = (await client.get("/users/me/overview")).json()
    assert overview["degraded"] == []
    assert overview["loyalty"]["user_id"] == overview["profile"]["id"]
    order_ids = [order["id"] for order in overview["recent_orders"]]
    assert [s["order_id"] for s in overview["shipments"]] == order_ids


async def test_dead_and_slow_downstreams_degrade_on_time(settings: Settings) -> None:
    """A refused and a hanging downstream both fall back within their timeouts."""
    hanging = create_sim_app(SimConfig(mode="hang"))
    async with (
        serve_asgi(hanging) as hanging_url,
        overview_client(
            settings,
            loyalty_url=f"http://127.0.0.1:{closed_port()}",
            shipments_url=hanging_url,
            loyalty_timeout=0.2,
            shipments_timeout=0.2,
            overview_deadline=30.0,
        ) as client,
    ):
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await client.get("/users/me/overview")
        took = loop.time() - started
    assert response.status_code == 200
    overview = response.json()
    assert sorted(overview["degraded"]) == ["loyalty", "shipments"]
    assert overview["loyalty"] is None
    assert overview["shipments"] == []
    assert len(overview["recent_orders"]) == 2
    # Bounded by the downstream timeouts (0.2 s), not by the 30 s request deadline: only a
    # call that waited for the hang would take that long, whatever the machine's load.
    assert 0.2 <= took < 30.0
