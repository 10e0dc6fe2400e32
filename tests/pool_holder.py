"""Hold a service app's pooled connection from inside the app, until the test lets go.

holder = add_pool_holder(app)                    # before the lifespan starts
task = asyncio.create_task(client.get(holder.path))
await holder.holding.wait()                      # the connection is taken now
...
holder.release.set()
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fastapi import FastAPI, Request

from loopwise.service.db import Database

__all__ = ["PoolHolder", "add_pool_holder"]


@dataclass
class PoolHolder:
    path: str
    holding: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def add_pool_holder(app: FastAPI, path: str = "/_hold") -> PoolHolder:
    """Add a route to ``app`` that takes one pooled connection and keeps it until released."""
    holder = PoolHolder(path)

    async def hold(request: Request) -> None:
        db: Database = request.state.db
        async with db.pool.acquire():
            holder.holding.set()
            await holder.release.wait()

    app.add_api_route(path, hold)
    return holder
