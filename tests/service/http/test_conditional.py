"""Conditional requests: ETags on the profile and preferences, If-Match, If-None-Match,
If-Unmodified-Since, and the lost update they prevent."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import asyncpg
import httpx
import pytest
from starlette.datastructures import Headers

from loopwise.service.exceptions import PreconditionFailed, PreconditionRequired
from loopwise.service.http.conditional import Precondition, entity_tag, fresh
from tests.service.accounts import conftest as accounts
from tests.service.accounts.conftest import Account

make_account = accounts.make_account  # the accounts tests' fixtures, shared by name
alice = accounts.alice
bob = accounts.bob

PREFERENCES = "/users/me/preferences"


def _headers(**values: str) -> Headers:
    return Headers({name.replace("_", "-"): value for name, value in values.items()})


@pytest.mark.parametrize(
    ("if_none_match", "expected"),
    [
        ('"p7.3"', True),
        ('W/"p7.3"', True),  # weak comparison for If-None-Match (RFC 9110 §13.1.2)
        ('"p7.2", "p7.3"', True),
        ("*", True),
        ('"p7.2"', False),
        ('"p8.3"', False),  # another user's version 3
        ("p7.3", False),  # unquoted: not an entity-tag
    ],
)
def test_if_none_match(if_none_match: str, expected: bool) -> None:
    """If-None-Match names the current tag (weakly) or is *; anything else is stale."""
    assert fresh(_headers(if_none_match=if_none_match), entity_tag("p", 7, 3)) is expected


@pytest.mark.parametrize(
    ("if_match", "holds"),
    [
        ('"p7.3"', True),
        ('"p7.1", "p7.3"', True),
        ("*", True),
        ('W/"p7.3"', False),  # If-Match compares strongly (RFC 9110 §13.1.1)
        ('"p8.3"', False),
        ('"u7.3"', False),  # the profile's tag, not the preferences'
        ('"bogus"', False),
        ("garbage", False),
    ],
)
def test_if_match(if_match: str, holds: bool) -> None:
    """If-Match holds only for the resource's own current tag, strongly, or *."""
    precondition = Precondition.of(_headers(if_match=if_match), "p", 7, required=True)
    assert precondition.holds(3, None) is holds


def test_if_unmodified_since_to_the_second() -> None:
    """A change within the named second still satisfies it; a later one does not."""
    changed = datetime(2026, 12, 1, 10, 0, 0, 700_000, tzinfo=UTC)
    same_second = _headers(if_unmodified_since="Tue, 01 Dec 2026 10:00:00 GMT")
    before = _headers(if_unmodified_since="Tue, 01 Dec 2026 09:59:59 GMT")
    assert Precondition.of(same_second, "u", 1, required=False).holds(5, changed)
    assert not Precondition.of(before, "u", 1, required=False).holds(5, changed)
    # Never written: no modification date, so the header does not apply (RFC 9110 §13.1.4).
    assert Precondition.of(before, "u", 1, required=False).holds(0, None)


def test_if_match_wins_over_if_unmodified_since() -> None:
    """With If-Match present, If-Unmodified-Since is ignored (RFC 9110 §13.1.4)."""
    headers = _headers(if_match='"u1.5"', if_unmodified_since="Thu, 01 Jan 1970 00:00:00 GMT")
    assert Precondition.of(headers, "u", 1, required=True).holds(5, datetime.now(UTC))


def test_required_precondition() -> None:
    """No If-Match and no valid If-Unmodified-Since: 428 where one is required."""
    with pytest.raises(PreconditionRequired):
        Precondition.of(_headers(), "p", 1, required=True)
    with pytest.raises(PreconditionRequired):
        Precondition.of(_headers(if_unmodified_since="yesterday"), "p", 1, required=True)
    optional = Precondition.of(_headers(), "p", 1, required=False)
    assert optional.versions is None
    assert optional.unmodified_since is None


def test_failure_names_the_current_tag() -> None:
    """A 412 carries the current ETag, so the client can re-read or decide."""
    precondition = Precondition.of(_headers(if_match='"p1.1"'), "p", 1, required=True)
    with pytest.raises(PreconditionFailed) as failed:
        precondition.check(4, None)
    assert failed.value.headers == {"ETag": '"p1.4"'}


async def test_preferences_lost_update_is_refused(
    client: httpx.AsyncClient, alice: Account
) -> None:
    """Two clients read the same version; the second writer gets 412, not a silent win."""
    tag = (await client.get(PREFERENCES, headers=alice.headers)).headers["etag"]
    first = await client.put(
        PREFERENCES, headers={**alice.headers, "If-Match": tag}, json={"theme": "dark"}
    )
    second = await client.put(
        PREFERENCES, headers={**alice.headers, "If-Match": tag}, json={"language": "fr"}
    )
    assert first.status_code == 200
    assert second.status_code == 412
    assert second.headers["content-type"] == "application/problem+json"
    assert second.headers["etag"] == first.headers["etag"] != tag
    read = await client.get(PREFERENCES, headers=alice.headers)
    assert read.json()["theme"] == "dark"
    assert read.headers["etag"] == first.headers["etag"]


async def test_bogus_if_match_and_no_precondition(
    client: httpx.AsyncClient, alice: Account
) -> None:
    """`If-Match: "bogus"` is 412; no precondition on a whole-document PUT is 428."""
    bogus = await client.put(
        PREFERENCES, headers={**alice.headers, "If-Match": '"bogus"'}, json={"theme": "dark"}
    )
    missing = await client.put(PREFERENCES, headers=alice.headers, json={"theme": "dark"})
    assert (bogus.status_code, missing.status_code) == (412, 428)
    assert "If-Match" in missing.json()["detail"]


async def test_concurrent_writers_of_one_version(client: httpx.AsyncClient, alice: Account) -> None:
    """Of several writes naming the same version, exactly one wins, first write included."""
    # Version 0 (no row yet: concurrent inserts), then an existing row. Every document
    # differs from the stored one: a write that changes nothing keeps the version, and
    # then a second write naming it rightly succeeds.
    for sizes in (range(1, 7), range(11, 17)):
        tag = (await client.get(PREFERENCES, headers=alice.headers)).headers["etag"]
        answers = await asyncio.gather(
            *(
                client.put(
                    PREFERENCES,
                    headers={**alice.headers, "If-Match": tag},
                    json={"page_size": n},
                )
                for n in sizes
            )
        )
        assert sorted(a.status_code for a in answers) == [200] + [412] * 5


async def test_if_none_match_on_reads(
    client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    """304 with the ETag and no body while current; 200 once changed; never across users."""
    for path in ("/users/me", PREFERENCES):
        read = await client.get(path, headers=alice.headers)
        tag = read.headers["etag"]
        again = await client.get(path, headers={**alice.headers, "If-None-Match": tag})
        assert again.status_code == 304
        assert again.headers["etag"] == tag
        assert again.content == b""
        # Bob at the same version still gets his own copy: the owner is in the tag.
        other = await client.get(path, headers={**bob.headers, "If-None-Match": tag})
        assert other.status_code == 200


async def test_profile_etag_follows_the_name_not_the_password(
    client: httpx.AsyncClient, alice: Account
) -> None:
    """The profile's ETag changes with what it shows; a password change shows nothing new."""
    tag = (await client.get("/users/me", headers=alice.headers)).headers["etag"]
    password = await client.patch(
        "/users/me",
        headers={**alice.headers, "If-Match": tag},
        json={"password": "a brand new phrase", "current_password": alice.password},
    )
    assert password.status_code == 200
    assert password.headers["etag"] == tag
    renamed = await client.patch(
        "/users/me", headers={**alice.headers, "If-Match": tag}, json={"display_name": "Al"}
    )
    assert renamed.status_code == 200
    assert renamed.headers["etag"] != tag
    read = await client.get("/users/me", headers=alice.headers)
    assert read.headers["etag"] == renamed.headers["etag"]
    stale = await client.patch(
        "/users/me", headers={**alice.headers, "If-Match": tag}, json={"display_name": "X"}
    )
    assert stale.status_code == 412
    assert (await client.get("/users/me", headers=alice.headers)).json()["display_name"] == "Al"


async def test_stale_if_unmodified_since_is_refused(
    client: httpx.AsyncClient, alice: Account
) -> None:
    """A date before the last change is 412 on PATCH and PUT; a later one lets it through."""
    await client.put(PREFERENCES, headers=alice.overwriting, json={"theme": "dark"})
    await client.patch("/users/me", headers=alice.headers, json={"display_name": "Changed"})
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    future = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    for method, path, body in (
        ("PATCH", "/users/me", {"display_name": "Stale"}),
        ("PUT", PREFERENCES, {"theme": "light"}),
    ):
        stale = await client.request(
            method, path, headers={**alice.headers, "If-Unmodified-Since": past}, json=body
        )
        assert stale.status_code == 412, method
        fresh_enough = await client.request(
            method, path, headers={**alice.headers, "If-Unmodified-Since": future}, json=body
        )
        assert fresh_enough.status_code == 200, method


async def test_any_write_path_changes_the_etag(
    client: httpx.AsyncClient, alice: Account, database_url: str
) -> None:
    """An operator's SQL changes the ETag too: a trigger keeps the version, not the route."""
    tag = (
        await client.put(PREFERENCES, headers=alice.overwriting, json={"theme": "dark"})
    ).headers["etag"]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            'UPDATE preferences SET document = document || \'{"theme": "light"}\' '
            "WHERE user_id = $1",
            alice.id,
        )
        # The same document again is no change: the version stays.
        await conn.execute(
            "UPDATE preferences SET document = document WHERE user_id = $1", alice.id
        )
    finally:
        await conn.close()
    read = await client.get(PREFERENCES, headers={**alice.headers, "If-None-Match": tag})
    assert read.status_code == 200
    assert read.headers["etag"] == entity_tag("p", alice.id, 2)
