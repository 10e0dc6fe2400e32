"""Registration, reading and updating users: happy paths and hostile input."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from tests.service.accounts.conftest import PASSWORD, Account, MakeAccount, login

PROBLEM = "application/problem+json"


def _case(response: httpx.Response) -> str:
    """Which request failed, for the assertion message."""
    return f"{response.request.method} {response.request.url} {response.request.content[:120]!r}"


def _registration(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "email": "new@example.com",
        "password": PASSWORD,
        "display_name": "Grace",
    }
    body.update(overrides)
    return body


async def test_register_returns_the_user_without_secrets(
    client: httpx.AsyncClient, database_url: str
) -> None:
    """201 with id, email, name and creation time; the stored hash is argon2id."""
    response = await client.post("/register", json=_registration())
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "email", "display_name", "created_at", "email_verified"}
    assert body["email"] == "new@example.com"
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval("SELECT password_hash FROM users WHERE id = $1", body["id"])
    finally:
        await conn.close()
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


async def test_email_taken_case_insensitively(client: httpx.AsyncClient) -> None:
    """A second registration with the same email in another case is 409."""
    assert (await client.post("/register", json=_registration())).status_code == 201
    again = await client.post("/register", json=_registration(email="NEW@Example.COM"))
    assert again.status_code == 409
    assert again.headers["content-type"] == PROBLEM


async def test_simultaneous_registrations_one_wins(client: httpx.AsyncClient) -> None:
    """Two registrations racing for one email: exactly one 201, the other 409."""
    responses = await asyncio.gather(
        client.post("/register", json=_registration(email="race@example.com")),
        client.post("/register", json=_registration(email="Race@example.com")),
    )
    assert sorted(r.status_code for r in responses) == [201, 409]


async def test_unicode_and_emoji_names_round_trip(client: httpx.AsyncClient) -> None:
    """Names in any script, emoji included, are stored and returned as sent."""
    name = "Zoë 李 🚀 Ελένη"
    response = await client.post("/register", json=_registration(display_name=name))
    assert response.status_code == 201
    assert response.json()["display_name"] == name


async def test_sql_injection_strings_are_data(client: httpx.AsyncClient) -> None:
    """SQL in a name is stored verbatim and harms nothing."""
    name = "Robert'); DROP TABLE users;--"
    response = await client.post("/register", json=_registration(display_name=name))
    assert response.status_code == 201
    assert response.json()["display_name"] == name
    other = await client.post(
        "/register", json=_registration(email="x@example.com", display_name="ok")
    )
    assert other.status_code == 201


BAD_REGISTRATIONS = [
    (_registration(email="not-an-email"), "email"),
    (_registration(email="a@b@c.com"), "email"),
    (_registration(email="' OR 1=1 --@example.com"), "email"),
    (_registration(email="x" * 300 + "@example.com"), "email"),
    (_registration(password="short"), "password"),
    (_registration(password="a" * 129), "password"),
    (_registration(password="aaaaaaaaaaaa"), "password"),
    (_registration(password="        "), "password"),
    (_registration(display_name=""), "display_name"),
    (_registration(display_name="   "), "display_name"),
    (_registration(display_name="x" * 101), "display_name"),
    (_registration(display_name="nul\x00byte"), "display_name"),
    (_registration(display_name="line\nbreak"), "display_name"),
    (_registration(display_name=42), "display_name"),
    (_registration(email=["a@b.co"]), "email"),
    (_registration(password=12345678), "password"),
    (_registration(display_name=None), "display_name"),
    ({"email": "a@example.com", "password": PASSWORD}, "display_name"),
    (_registration(role="admin"), "role"),
]


async def test_register_field_errors(client: httpx.AsyncClient) -> None:
    """Invalid, missing, mistyped and extra fields are 422 naming the field."""
    for body, field in BAD_REGISTRATIONS:
        response = await client.post("/register", json=body)
        assert response.status_code == 422, _case(response)
        assert response.headers["content-type"] == PROBLEM
        assert field in {error["loc"][-1] for error in response.json()["errors"]}


MALFORMED_BODIES = [
    (b'{"email": "a@example.com",', 400),
    (b"not json at all", 400),
    (b"[]", 422),
    (b'"a string"', 422),
    (b"null", 422),
    (b"\xff\xfe\x00", 400),
]


async def test_register_malformed_bodies(client: httpx.AsyncClient) -> None:
    """Malformed JSON is 400, JSON of the wrong shape 422; neither is ever 500."""
    for content, status in MALFORMED_BODIES:
        response = await client.post(
            "/register", content=content, headers={"content-type": "application/json"}
        )
        assert response.status_code == status, _case(response)
        assert response.headers["content-type"] == PROBLEM


async def test_register_huge_body_is_413(client: httpx.AsyncClient) -> None:
    """A body over the limit is refused before it is parsed."""
    response = await client.post("/register", json=_registration(display_name="x" * 70_000))
    assert response.status_code == 413


async def test_read_me_and_self_by_id(client: httpx.AsyncClient, alice: Account) -> None:
    """A user reads themselves at /users/me and at /users/{their id}."""
    me = await client.get("/users/me", headers=alice.headers)
    by_id = await client.get(f"/users/{alice.id}", headers=alice.headers)
    assert me.status_code == by_id.status_code == 200
    assert me.json() == by_id.json()
    assert me.json()["email"] == alice.email


MISSING_USER_PATHS = ["/users/999999", "/users/9223372036854775807"]


async def test_nonexistent_user_is_404(client: httpx.AsyncClient, alice: Account) -> None:
    """Ids that do not exist are 404, like other users' ids."""
    for path in MISSING_USER_PATHS:
        response = await client.get(path, headers=alice.headers)
        assert response.status_code == 404, _case(response)


async def test_other_users_are_404(client: httpx.AsyncClient, alice: Account, bob: Account) -> None:
    """Reading another user is 404, not 403: existence does not leak."""
    response = await client.get(f"/users/{bob.id}", headers=alice.headers)
    assert response.status_code == 404
    assert bob.email not in response.text


BAD_USER_IDS = [
    "0",
    "-1",
    "9223372036854775808",
    "1e3",
    "abc",
    "1%20OR%201=1",
    "%F0%9F%9A%80",
]


async def test_bad_user_ids_are_422(client: httpx.AsyncClient, alice: Account) -> None:
    """Ids that are not positive bigints are refused before any query."""
    for user_id in BAD_USER_IDS:
        response = await client.get(f"/users/{user_id}", headers=alice.headers)
        assert response.status_code == 422, _case(response)


async def test_update_display_name(client: httpx.AsyncClient, alice: Account) -> None:
    """PATCH changes the name and returns the updated user."""
    response = await client.patch(
        "/users/me", headers=alice.headers, json={"display_name": "Ada 🦋"}
    )
    assert response.status_code == 200
    assert response.json()["display_name"] == "Ada 🦋"
    me = await client.get("/users/me", headers=alice.headers)
    assert me.json()["display_name"] == "Ada 🦋"


async def test_password_change_revokes_other_sessions(
    client: httpx.AsyncClient, alice: Account
) -> None:
    """A new password ends every other session, keeps this one, and works for login."""
    other_token = await login(client, alice.email, alice.password)
    response = await client.patch(
        "/users/me",
        headers=alice.headers,
        json={"password": "a brand new secret", "current_password": alice.password},
    )
    assert response.status_code == 200
    other = await client.get("/users/me", headers={"Authorization": f"Bearer {other_token}"})
    assert other.status_code == 401
    assert (await client.get("/users/me", headers=alice.headers)).status_code == 200
    old = await client.post("/login", json={"email": alice.email, "password": alice.password})
    assert old.status_code == 401
    await login(client, alice.email, "a brand new secret")


async def test_password_change_needs_the_right_current_password(
    client: httpx.AsyncClient, alice: Account
) -> None:
    """A wrong current password is 403 and changes nothing; a missing one is 422."""
    wrong = await client.patch(
        "/users/me",
        headers=alice.headers,
        json={"password": "a brand new secret", "current_password": "not it at all"},
    )
    assert wrong.status_code == 403
    missing = await client.patch(
        "/users/me", headers=alice.headers, json={"password": "a brand new secret"}
    )
    assert missing.status_code == 422
    await login(client, alice.email, alice.password)


BAD_UPDATES = [
    {"display_name": ""},
    {"display_name": 7},
    {"display_name": "x" * 101},
    {"email": "other@example.com"},
    {"role": "admin"},
    {"password": "short", "current_password": PASSWORD},
]


async def test_update_field_errors(client: httpx.AsyncClient, alice: Account) -> None:
    """Bad values and fields that cannot be changed (email, role) are 422."""
    for body in BAD_UPDATES:
        response = await client.patch("/users/me", headers=alice.headers, json=body)
        assert response.status_code == 422, _case(response)


async def test_make_account_helper(make_account: MakeAccount) -> None:
    """The test helper yields distinct, logged-in users."""
    first, second = await make_account(), await make_account()
    assert first.id != second.id
    assert first.token != second.token
