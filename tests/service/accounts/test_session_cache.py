"""Sessions in memory: served without a query, forgotten the moment PostgreSQL says so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from loopwise.service.app import create_app
from loopwise.service.identity.session_cache import SessionCache
from loopwise.service.identity.sessions import hash_token
from loopwise.service.settings import Settings
from tests.service.accounts.conftest import Account, announced, cache_stats, listening, login, until


@pytest.fixture
async def other_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A second instance of the service on the same database (another process, in effect)."""
    async with LifespanManager(create_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://other.test") as c:
            yield c


async def test_repeated_requests_are_served_from_memory(
    client: httpx.AsyncClient, alice: Account
) -> None:
    """After the first lookup, the same token is authenticated without a query."""
    await listening(client)
    await client.get("/users/me", headers=alice.headers)
    before = await cache_stats(client)
    for _ in range(5):
        assert (await client.get(f"/users/{alice.id}", headers=alice.headers)).status_code == 200
    after = await cache_stats(client)
    assert after["hits_total"] - before["hits_total"] == 5
    assert after["misses_total"] == before["misses_total"]


async def test_logout_on_one_instance_reaches_the_others(
    client: httpx.AsyncClient, other_client: httpx.AsyncClient, alice: Account
) -> None:
    """A token logged out through one instance is refused by another that had it cached."""
    await listening(other_client)
    assert (await other_client.get("/users/me", headers=alice.headers)).status_code == 200
    before = (await cache_stats(other_client))["invalidations_total"]
    assert (await client.post("/logout", headers=alice.headers)).status_code == 204
    await announced(other_client, before)
    assert (await other_client.get("/users/me", headers=alice.headers)).status_code == 401


async def test_a_name_change_reaches_the_others(
    client: httpx.AsyncClient, other_client: httpx.AsyncClient, alice: Account
) -> None:
    """Another instance shows the new display name once the change is announced."""
    await listening(other_client)
    await other_client.get("/users/me", headers=alice.headers)
    before = (await cache_stats(other_client))["invalidations_total"]
    changed = await client.patch("/users/me", headers=alice.headers, json={"display_name": "Bo"})
    assert changed.status_code == 200
    await announced(other_client, before)
    me = await other_client.get("/users/me", headers=alice.headers)
    assert me.json()["display_name"] == "Bo"


async def test_own_writes_are_read_back_at_once(client: httpx.AsyncClient, alice: Account) -> None:
    """The instance that made a change never serves the old value, not even for a moment."""
    await listening(client)
    await client.get("/users/me", headers=alice.headers)
    await client.patch("/users/me", headers=alice.headers, json={"display_name": "Cy"})
    assert (await client.get("/users/me", headers=alice.headers)).json()["display_name"] == "Cy"
    await client.post("/logout", headers=alice.headers)
    assert (await client.get("/users/me", headers=alice.headers)).status_code == 401


async def test_a_password_change_ends_other_sessions_everywhere(
    client: httpx.AsyncClient, other_client: httpx.AsyncClient, alice: Account
) -> None:
    """Another instance refuses the user's other tokens after a password change."""
    second = await login(client, alice.email, alice.password)
    headers = {"Authorization": f"Bearer {second}"}
    await listening(other_client)
    assert (await other_client.get("/users/me", headers=headers)).status_code == 200
    before = (await cache_stats(other_client))["invalidations_total"]
    body = {"password": "a brand new passphrase", "current_password": alice.password}
    assert (await client.patch("/users/me", headers=alice.headers, json=body)).status_code == 200
    await announced(other_client, before)
    assert (await other_client.get("/users/me", headers=headers)).status_code == 401
    assert (await other_client.get("/users/me", headers=alice.headers)).status_code == 200


async def test_changes_made_in_sql_are_heard_too(
    client: httpx.AsyncClient, alice: Account, database_url: str
) -> None:
    """An operator's UPDATE, not made through the API, still reaches the cache (triggers)."""
    await listening(client)
    await client.get("/users/me", headers=alice.headers)
    before = (await cache_stats(client))["invalidations_total"]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE users SET role = 'admin' WHERE id = $1", alice.id)
        await conn.execute("DELETE FROM users WHERE id = $1", alice.id)
    finally:
        await conn.close()
    await announced(client, before)
    assert (await client.get("/users/me", headers=alice.headers)).status_code == 401


async def test_a_lost_listener_empties_and_bypasses_the_cache(
    client: httpx.AsyncClient, alice: Account, database_url: str
) -> None:
    """While LISTEN is down nothing is served from memory; caching resumes once it is back."""
    await listening(client)
    await client.get("/users/me", headers=alice.headers)
    assert (await cache_stats(client))["entries"] == 1
    conn = await asyncpg.connect(database_url)
    try:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'loopwise-listen-auth'"
        )
    finally:
        await conn.close()
    assert killed == 1

    async def emptied() -> bool:
        stats = await cache_stats(client)
        return stats["entries"] == 0

    await until(emptied)
    await listening(client)
    await client.get("/users/me", headers=alice.headers)
    before = await cache_stats(client)
    await client.get("/users/me", headers=alice.headers)
    assert (await cache_stats(client))["hits_total"] == before["hits_total"] + 1


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as p:
        yield p


async def cache_listening(cache: SessionCache) -> None:
    async def check() -> bool:
        return cache.stats().listening

    await until(check)


async def test_a_load_that_raced_an_announcement_is_not_kept(
    alice: Account, database_url: str, pool: asyncpg.Pool
) -> None:
    """A row read before a change was announced is used once, never cached."""
    async with SessionCache(database_url, ttl=60, max_entries=10) as cache:
        await cache_listening(cache)
        loading = asyncio.create_task(cache.find_caller(pool, alice.token))
        await asyncio.sleep(0)  # the lookup is now waiting for PostgreSQL
        cache.forget_user(alice.id)  # what an announcement does
        assert (await loading) is not None
        assert cache.stats().entries == 0
        await cache.find_caller(pool, alice.token)
        assert cache.stats().entries == 1


async def test_entries_end_with_their_session_and_their_ttl(
    alice: Account, database_url: str, pool: asyncpg.Pool
) -> None:
    """An entry is not used past min(ttl, the session's remaining life)."""
    now = [0.0]
    async with SessionCache(database_url, ttl=1e9, max_entries=10, clock=lambda: now[0]) as cache:
        await cache_listening(cache)
        remaining = await pool.fetchval(
            "SELECT extract(epoch FROM expires_at - now())::float8 FROM sessions "
            "WHERE token_hash = $1",
            hash_token(alice.token),
        )
        await cache.find_caller(pool, alice.token)
        now[0] = remaining - 1
        await cache.find_caller(pool, alice.token)
        assert cache.stats().hits == 1
        now[0] = remaining + 1
        await cache.find_caller(pool, alice.token)
        assert (cache.stats().hits, cache.stats().misses) == (1, 2)
    async with SessionCache(database_url, ttl=5, max_entries=10, clock=lambda: now[0]) as cache:
        await cache_listening(cache)
        await cache.find_caller(pool, alice.token)
        now[0] += 6
        await cache.find_caller(pool, alice.token)
        assert (cache.stats().hits, cache.stats().misses) == (0, 2)


async def test_size_is_bounded_and_ttl_zero_turns_it_off(
    make_account: Callable[..., Awaitable[Account]], database_url: str, pool: asyncpg.Pool
) -> None:
    """At most ``max_entries`` sessions are held; with ``ttl=0`` every lookup queries."""
    accounts = [await make_account() for _ in range(3)]
    async with SessionCache(database_url, ttl=60, max_entries=2) as cache:
        await cache_listening(cache)
        for account in accounts:
            assert (await cache.find_caller(pool, account.token)) is not None
        assert cache.stats().entries == 2
    async with SessionCache(database_url, ttl=0, max_entries=2) as cache:
        for _ in range(2):
            assert (await cache.find_caller(pool, accounts[0].token)) is not None
        assert (cache.stats().entries, cache.stats().misses, cache.stats().listening) == (
            0,
            2,
            False,
        )


def test_bad_arguments_are_refused() -> None:
    """A negative ttl or an empty cache is a programming error, said plainly."""
    with pytest.raises(ValueError, match="`ttl`"):
        SessionCache("postgresql://unused", ttl=-1, max_entries=1)
    with pytest.raises(ValueError, match="`max_entries`"):
        SessionCache("postgresql://unused", ttl=1, max_entries=0)
