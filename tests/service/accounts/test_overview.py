"""The overview: one deadline, one fused query, and the parts that degraded."""

from __future__ import annotations

import asyncio

import anyio.to_thread
import asyncpg
import httpx
from asgi_lifespan import LifespanManager

from loopwise.service.app import create_app
from loopwise.service.settings import Settings
from tests.pool_holder import add_pool_holder
from tests.service.accounts.conftest import Account, login

ITEM = {"sku": "TEA-01", "quantity": 1, "unit_price_cents": 450}


async def test_overview_gathers_profile_orders_and_preferences(
    client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    """Profile, the five newest orders (own only) and preferences, nothing degraded."""
    for n in range(7):
        await client.post(
            "/users/me/orders",
            headers=alice.headers,
            json={"items": [{**ITEM, "quantity": n + 1}]},
        )
    await client.post("/users/me/orders", headers=bob.headers, json={"items": [ITEM]})
    await client.put("/users/me/preferences", headers=alice.overwriting, json={"theme": "dark"})
    response = await client.get("/users/me/overview", headers=alice.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["profile"]["id"] == alice.id
    assert [o["items"][0]["quantity"] for o in body["recent_orders"]] == [7, 6, 5, 4, 3]
    assert body["recent_orders"][0]["total_cents"] == 7 * 450
    assert body["preferences"]["theme"] == "dark"
    assert body["degraded"] == []


async def test_overview_of_a_new_user(client: httpx.AsyncClient, alice: Account) -> None:
    """A user with no orders or preferences gets empty orders and the defaults."""
    body = (await client.get("/users/me/overview", headers=alice.headers)).json()
    assert body["recent_orders"] == []
    assert body["preferences"]["timezone"] == "UTC"


async def test_overview_past_its_deadline_is_503(
    settings: Settings, database_url: str, client: httpx.AsyncClient, alice: Account
) -> None:
    """When PostgreSQL cannot answer within the deadline: 503 + Retry-After, then recovery."""
    quick = settings.model_copy(update={"overview_deadline": 0.2})
    locker = await asyncpg.connect(database_url)
    try:
        async with LifespanManager(create_app(quick)) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as fast:
                token = await login(fast, alice.email, alice.password)
                headers = {"Authorization": f"Bearer {token}"}
                async with locker.transaction():
                    # Holding this lock makes any read of `orders` wait until we let go.
                    await locker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
                    stuck = await fast.get("/users/me/overview", headers=headers)
                assert stuck.status_code == 503
                assert stuck.headers["retry-after"] == "1"
                assert stuck.headers["content-type"] == "application/problem+json"
                again = await fast.get("/users/me/overview", headers=headers)
                assert again.status_code == 200
    finally:
        await locker.close()


async def test_overview_deadline_counts_from_arrival(settings: Settings, alice: Account) -> None:
    """Waiting for a pooled connection to authenticate spends the overview's own budget."""
    configured = settings.model_copy(
        update={
            "overview_deadline": 0.2,
            "db_pool_min": 1,
            "db_pool_max": 1,
            # Far past the deadline (and the test's timeout): only the deadline can end it.
            "db_acquire_timeout": 3600,
            "jobs_in_process": False,
        }
    )
    app = create_app(configured)
    holder = add_pool_holder(app)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as fast:
            token = await login(fast, alice.email, alice.password)
            headers = {"Authorization": f"Bearer {token}"}
            held = asyncio.create_task(fast.get(holder.path))
            await holder.holding.wait()
            busy = await fast.get("/users/me/overview", headers=headers)
            holder.release.set()
            assert (await held).status_code == 200
            again = await fast.get("/users/me/overview", headers=headers)
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "1"
    assert again.status_code == 200


async def test_overview_needs_no_thread(client: httpx.AsyncClient, alice: Account) -> None:
    """Its dependencies resolve on the loop: with no thread to be had, it still answers."""
    threads = anyio.to_thread.current_default_thread_limiter()
    taken, tokens = object(), threads.total_tokens
    threads.total_tokens = 1
    await threads.acquire_on_behalf_of(taken)  # any thread hop would now wait forever
    try:
        response = await client.get("/users/me/overview", headers=alice.headers)
    finally:
        threads.release_on_behalf_of(taken)
        threads.total_tokens = tokens
    assert response.status_code == 200
