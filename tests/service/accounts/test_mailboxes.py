"""Email addresses: RFC 5321 lengths, one identity rule, deliverability, display names."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from alembic import command
from asgi_lifespan import LifespanManager

from loopwise.service.app import create_app
from loopwise.service.migrate import _config
from loopwise.service.settings import Settings
from tests.pg import with_database

PASSWORD = "correct horse battery"


async def _register(client: httpx.AsyncClient, email: str, name: str = "Ada") -> httpx.Response:
    return await client.post(
        "/register", json={"email": email, "password": PASSWORD, "display_name": name}
    )


@pytest.fixture
async def utf8_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app whose mail relay is declared to offer SMTPUTF8."""
    app = create_app(settings.model_copy(update={"smtp_utf8": True}))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


async def test_rfc5321_lengths_in_octets(utf8_client: httpx.AsyncClient) -> None:
    """Local part ≤ 64 octets and address ≤ 254 octets, counted in UTF-8, are enforced."""
    assert (await _register(utf8_client, "a" * 64 + "@example.com")).status_code == 201
    assert (await _register(utf8_client, "b" * 65 + "@example.com")).status_code == 422
    # 32 "é" are 64 octets; 33 are 66, though only 33 characters.
    assert (await _register(utf8_client, "é" * 32 + "@example.com")).status_code == 201
    assert (await _register(utf8_client, "é" * 33 + "@example.com")).status_code == 422
    domain = ".".join(["d" * 61, "d" * 60, "d" * 60]) + ".example"  # 191 octets
    assert (await _register(utf8_client, "c" * 62 + "@" + domain)).status_code == 201  # 254
    assert (await _register(utf8_client, "e" * 63 + "@" + domain)).status_code == 422  # 255


async def test_unicode_case_never_merges_mailboxes(utf8_client: httpx.AsyncClient) -> None:
    """KELVIN SIGN and dotted İ addresses are distinct accounts; no login crosses them."""
    pairs = [
        ("\u212aelvin@example.com", "kelvin@example.com"),
        ("İstanbul@x.example", "istanbul@x.example"),
    ]
    for unusual, plain in pairs:
        assert (await _register(utf8_client, unusual)).status_code == 201
        assert (await _register(utf8_client, plain)).status_code == 201
        assert (await _register(utf8_client, plain)).status_code == 409
        # The plain address's password is its own: the unusual account's does not open it.
        other = await utf8_client.post("/login", json={"email": plain, "password": "not it!!"})
        assert other.status_code == 401
        me = await utf8_client.post("/login", json={"email": unusual, "password": PASSWORD})
        token = me.json()["access_token"]
        who = await utf8_client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
        assert who.json()["email"] == unusual


async def test_domain_is_one_whatever_its_case_or_encoding(client: httpx.AsyncClient) -> None:
    """Domains compare case-insensitively and as IDNA: U-label, A-label and capitals are one."""
    assert (await _register(client, "ada@bücher.example")).status_code == 201
    assert (await _register(client, "ada@BÜCHER.EXAMPLE")).status_code == 409
    assert (await _register(client, "ada@xn--bcher-kva.example")).status_code == 409
    login = await client.post(
        "/login", json={"email": "ada@XN--BCHER-KVA.example", "password": PASSWORD}
    )
    assert login.status_code == 200
    # ASCII letters of the local part are folded too (RFC 5321 section 2.4).
    assert (await _register(client, "ADA@bücher.example")).status_code == 409


async def test_utf8_mailboxes_need_a_relay_that_offers_smtputf8(
    client: httpx.AsyncClient, utf8_client: httpx.AsyncClient
) -> None:
    """A non-ASCII local part is refused unless LOOPWISE_SMTP_UTF8 is on; domains always pass."""
    for address in ("josé@example.com", "用户@例子.广告", "straße@example.com"):
        refused = await _register(client, address)
        assert refused.status_code == 422, address
        assert refused.json()["errors"][0]["loc"] == ["body", "email"]
        assert (await _register(utf8_client, address)).status_code == 201, address
    assert (await _register(client, "ada@例子.广告")).status_code == 201


async def test_display_names_refuse_invisible_and_control_characters(
    client: httpx.AsyncClient,
) -> None:
    """Zero-width space, right-to-left override and other Cc/Cf characters are 422."""
    for n, name in enumerate(
        ["Ada\u200bLovelace", "\u202eecalevoL", "Ada\x00", "A\u2028B", "A\ufeff"]
    ):
        assert (await _register(client, f"n{n}@example.com", name)).status_code == 422, name
    assert (await _register(client, "ok@example.com", "Zoë 鍵 O'Brien-Smith")).status_code == 201


@pytest.fixture
async def database_at_0004(pg_admin_dsn: str) -> AsyncIterator[str]:
    """An empty database migrated to revision 0004, dropped afterwards."""
    name = f"loopwise_0004_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        dsn = with_database(pg_admin_dsn, name)
        await asyncio.to_thread(command.upgrade, _config(dsn), "0004")
        yield dsn
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _insert(dsn: str, *emails: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for email in emails:
            await conn.execute(
                "INSERT INTO users (email, display_name, password_hash) VALUES ($1, 'n', 'h')",
                email,
            )
    finally:
        await conn.close()


async def test_migration_keys_existing_rows(database_at_0004: str) -> None:
    """0005 gives every existing row its identity key, and the old lower() index is gone."""
    await _insert(
        database_at_0004, "Ada@Example.COM", "zoë@BÜCHER.example", "\u212aelvin@x.example"
    )
    await asyncio.to_thread(command.upgrade, _config(database_at_0004), "0005")
    conn = await asyncpg.connect(database_at_0004)
    try:
        keys = [r["email_key"] for r in await conn.fetch("SELECT email_key FROM users ORDER BY id")]
        assert keys == ["ada@example.com", "zoë@xn--bcher-kva.example", "\u212aelvin@x.example"]
        # Now kelvin@ is its own mailbox; the trigger keys a row inserted by plain SQL.
        await conn.execute(
            "INSERT INTO users (email, display_name, password_hash)"
            " VALUES ('kelvin@X.example', 'n', 'h')"
        )
        assert await conn.fetchval(
            "SELECT email_key FROM users WHERE email = 'kelvin@X.example'"
        ) == ("kelvin@x.example")
    finally:
        await conn.close()


async def test_migration_stops_on_rows_the_new_rule_makes_one(database_at_0004: str) -> None:
    """Two rows that are one mailbox only under IDNA: 0005 stops and names both ids."""
    await _insert(database_at_0004, "ada@bücher.example", "ada@xn--bcher-kva.example")
    with pytest.raises(RuntimeError, match="users 1 and 2 are one mailbox"):
        await asyncio.to_thread(command.upgrade, _config(database_at_0004), "0005")
