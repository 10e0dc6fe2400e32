"""Past saturation the service sheds load early instead of queueing without bound."""

from __future__ import annotations

import asyncio
import secrets

import httpx
from asgi_lifespan import LifespanManager

from loopwise.service.app import create_app
from loopwise.service.settings import Settings
from tests.pool_holder import add_pool_holder


async def test_exhausted_pool_answers_503_not_a_queue(settings: Settings) -> None:
    """With every pooled connection busy, a request waits at most the acquire timeout."""
    configured = settings.model_copy(
        update={
            "db_pool_min": 1,
            "db_pool_max": 1,
            "db_acquire_timeout": 0.2,
            "jobs_in_process": False,
        }
    )
    app = create_app(configured)
    holder = add_pool_holder(app)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            held = asyncio.create_task(client.get(holder.path))
            await holder.holding.wait()
            # A well-formed token nobody holds: checking it needs the database.
            unknown = {"Authorization": f"Bearer {secrets.token_urlsafe(32)}"}
            busy = await client.get("/users/me", headers=unknown)
            holder.release.set()
            assert (await held).status_code == 200
            after = await client.get("/users/me", headers=unknown)
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "1"
    assert busy.headers["content-type"] == "application/problem+json"
    assert after.status_code == 401  # the pool serves again once the connection is back
