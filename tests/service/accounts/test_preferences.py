"""Preferences: a typed document per user, unknown keys refused."""

from __future__ import annotations

import httpx

from tests.service.accounts.conftest import Account

DEFAULTS = {
    "language": "en",
    "timezone": "UTC",
    "theme": "system",
    "marketing_emails": False,
    "order_updates": True,
    "page_size": 20,
}

BAD_DOCUMENTS: list[object] = [
    {"favourite_colour": "blue"},
    {"timezone": "Mars/Olympus_Mons"},
    {"timezone": "Europe/Paris'; DROP TABLE preferences;--"},
    {"timezone": "../../etc/passwd"},
    {"timezone": 3},
    {"language": "english language"},
    {"language": "🇫🇷"},
    {"theme": "neon"},
    {"marketing_emails": "yes"},
    {"marketing_emails": 1},
    {"page_size": 0},
    {"page_size": 101},
    {"page_size": 10**40},
    {"page_size": 20.5},
    {"page_size": None},
    [],
    "dark",
    None,
]


async def test_defaults_until_set(client: httpx.AsyncClient, alice: Account) -> None:
    """A user who set nothing reads the defaults."""
    response = await client.get("/users/me/preferences", headers=alice.headers)
    assert response.status_code == 200
    assert response.json() == DEFAULTS


async def test_put_replaces_the_document(client: httpx.AsyncClient, alice: Account) -> None:
    """PUT stores the document whole; absent keys return to their defaults."""
    first = {"language": "pt-BR", "timezone": "America/Sao_Paulo", "theme": "dark"}
    response = await client.put("/users/me/preferences", headers=alice.overwriting, json=first)
    assert response.status_code == 200
    assert response.json() == {**DEFAULTS, **first}
    second = {"marketing_emails": True}
    await client.put("/users/me/preferences", headers=alice.overwriting, json=second)
    read = await client.get("/users/me/preferences", headers=alice.headers)
    assert read.json() == {**DEFAULTS, **second}


async def test_preferences_are_per_user(
    client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    """One user's preferences never show up for another."""
    await client.put("/users/me/preferences", headers=alice.overwriting, json={"theme": "dark"})
    response = await client.get("/users/me/preferences", headers=bob.headers)
    assert response.json() == DEFAULTS


async def test_invalid_documents_are_422(client: httpx.AsyncClient, alice: Account) -> None:
    """Unknown keys, unknown zones, wrong types and out-of-range values are 422."""
    for document in BAD_DOCUMENTS:
        response = await client.put(
            "/users/me/preferences", headers=alice.overwriting, json=document
        )
        assert response.status_code == 422, document
        assert response.headers["content-type"] == "application/problem+json"
    read = await client.get("/users/me/preferences", headers=alice.headers)
    assert read.json() == DEFAULTS


async def test_unknown_zone_names_the_field(client: httpx.AsyncClient, alice: Account) -> None:
    """A time zone outside the IANA database is a field error on `timezone`."""
    response = await client.put(
        "/users/me/preferences", headers=alice.overwriting, json={"timezone": "Nowhere/Land"}
    )
    assert response.json()["errors"][0]["loc"] == ["body", "timezone"]


async def test_malformed_and_huge_bodies(client: httpx.AsyncClient, alice: Account) -> None:
    """Broken JSON is 400; a body over the limit is 413 before parsing."""
    broken = await client.put(
        "/users/me/preferences",
        headers={**alice.headers, "content-type": "application/json"},
        content=b'{"theme": ',
    )
    assert broken.status_code == 400
    huge = await client.put(
        "/users/me/preferences", headers=alice.headers, json={"language": "x" * 100_000}
    )
    assert huge.status_code == 413
