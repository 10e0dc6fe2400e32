"""Preferences documents in memory: served without a query, forgotten on every write, on
every instance, as soon as PostgreSQL announces it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.types import Receive, Scope, Send

from loopwise.service.app import create_app
from loopwise.service.http.conditional import entity_tag
from loopwise.service.identity.preferences_cache import PreferencesCache
from loopwise.service.settings import Settings
from tests.service.accounts.conftest import Account, cache_stats, until

PREFERENCES = "/users/me/preferences"


@dataclass
class Instance:
    client: httpx.AsyncClient
    state: dict[str, Any]

    @property
    def documents(self) -> PreferencesCache:
        cache: PreferencesCache = self.state["preferences"]
        return cache


@pytest.fixture
async def other(settings: Settings) -> AsyncIterator[Instance]:
    """A second instance of the service on the same database, with its lifespan state."""
    state: dict[str, Any] = {}
    async with LifespanManager(create_app(settings)) as manager:

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await manager.app(scope, receive, send)
            state.update(scope["state"])  # what the manager's wrapper handed the request

        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://other.test") as c:
            instance = Instance(c, state)
            assert (await c.get("/healthz")).status_code == 200

            async def check() -> bool:
                return instance.documents.stats().listening

            await until(check)
            yield instance


async def _announced(instance: Instance, after: int) -> None:
    async def check() -> bool:
        return instance.documents.stats().invalidations > after

    await until(check)


async def test_repeated_reads_are_served_from_memory(other: Instance, alice: Account) -> None:
    """After the first read, the same document is answered without a query."""
    first = await other.client.get(PREFERENCES, headers=alice.headers)
    before = other.documents.stats()
    again = await other.client.get(PREFERENCES, headers=alice.headers)
    after = other.documents.stats()
    assert (again.status_code, again.content, again.headers["etag"]) == (
        first.status_code,
        first.content,
        first.headers["etag"],
    )
    assert (after.hits - before.hits, after.misses - before.misses) == (1, 0)
    exported = await cache_stats(other.client, "preferences")
    assert exported["entries"] == after.entries >= 1
    assert (exported["hits_total"], exported["misses_total"]) == (after.hits, after.misses)
    cached = await other.client.get(
        PREFERENCES, headers={**alice.headers, "If-None-Match": first.headers["etag"]}
    )
    assert cached.status_code == 304


async def test_a_write_on_one_instance_reaches_the_others(
    client: httpx.AsyncClient, other: Instance, alice: Account
) -> None:
    """A document replaced through one instance is read anew by another that had it kept."""
    kept = await other.client.get(PREFERENCES, headers=alice.headers)
    assert kept.headers["etag"] == entity_tag("p", alice.id, 0)
    before = other.documents.stats().invalidations
    written = await client.put(PREFERENCES, headers=alice.overwriting, json={"theme": "dark"})
    assert written.status_code == 200
    await _announced(other, before)
    read = await other.client.get(PREFERENCES, headers=alice.headers)
    assert read.headers["etag"] == written.headers["etag"] == entity_tag("p", alice.id, 1)
    assert read.json()["theme"] == "dark"


async def test_own_writes_are_read_back_at_once(other: Instance, alice: Account) -> None:
    """The instance that wrote answers the new document without waiting for PostgreSQL."""
    await other.client.get(PREFERENCES, headers=alice.headers)
    await other.client.put(PREFERENCES, headers=alice.overwriting, json={"theme": "light"})
    read = await other.client.get(PREFERENCES, headers=alice.headers)
    assert read.headers["etag"] == entity_tag("p", alice.id, 1)
    assert read.json()["theme"] == "light"


async def test_changes_made_in_sql_are_heard_too(
    other: Instance, alice: Account, database_url: str
) -> None:
    """An operator's UPDATE and DELETE reach the cache through the table's trigger."""
    await other.client.put(PREFERENCES, headers=alice.overwriting, json={"theme": "dark"})
    await other.client.get(PREFERENCES, headers=alice.headers)
    conn = await asyncpg.connect(database_url)
    try:
        for sql in (
            'UPDATE preferences SET document = document || \'{"theme": "light"}\' '
            "WHERE user_id = $1",
            "DELETE FROM preferences WHERE user_id = $1",
        ):
            before = other.documents.stats().invalidations
            await conn.execute(sql, alice.id)
            await _announced(other, before)
            read = await other.client.get(PREFERENCES, headers=alice.headers)
            assert read.status_code == 200
            assert read.json()["theme"] == ("light" if sql.startswith("UPDATE") else "system")
    finally:
        await conn.close()


async def test_a_read_that_raced_a_write_is_not_kept(
    client: httpx.AsyncClient, other: Instance, alice: Account
) -> None:
    """A document read before an announcement arrived is not kept past it."""
    generation = other.documents.generation
    before = other.documents.stats().invalidations
    await client.put(PREFERENCES, headers=alice.overwriting, json={"theme": "dark"})
    await _announced(other, before)
    other.documents.keep(alice.id, 0, b"{}", generation)
    assert other.documents.find(alice.id) is None


def test_nothing_is_kept_while_not_listening() -> None:
    """Without LISTEN in force (never opened, or the connection lost) every read queries."""
    documents = PreferencesCache(ttl=60, max_entries=10)
    documents.keep(1, 3, b"{}", documents.generation)
    assert documents.find(1) is None


async def test_a_lost_listener_empties_and_bypasses_the_cache(
    other: Instance, alice: Account, database_url: str
) -> None:
    """While the session cache's LISTEN is down (it carries both channels) nothing is served
    from memory; keeping resumes once it is back."""
    await other.client.get(PREFERENCES, headers=alice.headers)
    assert other.documents.stats().entries == 1
    conn = await asyncpg.connect(database_url)
    try:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = "
            "current_database() AND application_name = 'loopwise-listen-auth'"
        )
    finally:
        await conn.close()
    assert killed == 2  # the other instance's and the `client` fixture's

    async def emptied() -> bool:
        return other.documents.stats().entries == 0

    async def listening() -> bool:
        return other.documents.stats().listening

    await until(emptied)
    await until(listening)
    await other.client.get(PREFERENCES, headers=alice.headers)
    before = other.documents.stats().hits
    await other.client.get(PREFERENCES, headers=alice.headers)
    assert other.documents.stats().hits == before + 1
