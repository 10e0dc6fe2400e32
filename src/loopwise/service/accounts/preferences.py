"""Preferences: one JSON document per user with a schema.

Known keys are typed, unknown keys are refused (422), and every value is bounded, so the
stored document is a few hundred bytes at most; the table's CHECK (``pg_column_size <=
4096``) backs that up. Time zones are checked against the IANA names this machine knows,
loaded once at start-up off the event loop (reading them walks the tz database on disk).
"""

from __future__ import annotations

import json
import zoneinfo
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from loopwise.service.db import transaction
from loopwise.service.deps import CurrentUser, Pool, Timezones
from loopwise.service.exceptions import Unauthenticated
from loopwise.service.http.conditional import Precondition, entity_tag, fresh, not_modified
from loopwise.service.http.responses import (
    NOT_MODIFIED,
    PRECONDITION_FAILED,
    PRECONDITION_REQUIRED,
    conditional_headers,
    declare,
)
from loopwise.service.state import lifespan_state

__all__ = ["Preferences", "PreferencesUpdate", "load_timezones", "router"]

router = APIRouter(tags=["preferences"])

Language = Annotated[
    str,
    Field(
        pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$",
        max_length=35,
        description="A BCP 47 language tag, e.g. `en`, `pt-BR`.",
    ),
]
# The shape of an IANA name; which names exist is the server's tz database's to say (422).
Timezone = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z][A-Za-z0-9._+-]*(/[A-Za-z0-9._+-]+)*$",
        max_length=64,
        description="An IANA time zone, e.g. `Europe/Paris`.",
    ),
]
Theme = Literal["system", "light", "dark"]
PageSize = Annotated[int, Field(ge=1, le=100)]


class Preferences(BaseModel):
    """Your preferences document, every key present (the defaults until you set any).

    Open for additions: a later version may add keys, which clients should ignore.
    """

    # Every key is always sent, so the schema requires each (a default would make
    # generated clients type them as optional).
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    language: Language = "en"
    timezone: Timezone = "UTC"
    theme: Theme = "system"
    marketing_emails: bool = False
    order_updates: bool = True
    page_size: PageSize = 20


def _defaults_described(schema: dict[str, Any]) -> None:
    # A `default` in a request schema makes openapi-typescript type the key as required,
    # and `PUT {"theme": "dark"}` would not compile; the default is stated in words instead.
    for field in schema.get("properties", {}).values():
        if "default" in field:
            default = json.dumps(field.pop("default"))
            field["description"] = f"{field.get('description', '')} Absent: `{default}`.".strip()


class PreferencesUpdate(BaseModel):
    """A new preferences document for `PUT`: it replaces the stored one whole, and keys
    left out take their defaults. Unknown keys are refused (422)."""

    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra=_defaults_described)

    language: Language = "en"
    timezone: Timezone = "UTC"
    theme: Theme = "system"
    marketing_emails: bool = False
    order_updates: bool = True
    page_size: PageSize = 20


def load_timezones() -> frozenset[str]:
    """The IANA zone names known here. Blocking (reads the tz database): call off the loop."""
    return frozenset(zoneinfo.available_timezones() | {"UTC"})


# Version 0 is the defaults, before the first write; `preferences_version` (a trigger)
# bumps the version when the document changes.
READ_PREFERENCES = "SELECT document, version FROM preferences WHERE user_id = $1"
_LOCK = "SELECT version, updated_at FROM preferences WHERE user_id = $1 FOR UPDATE"
_INSERT = """
INSERT INTO preferences (user_id, document) VALUES ($1, $2::jsonb)
ON CONFLICT (user_id) DO NOTHING
RETURNING version
"""
_UPDATE = """
UPDATE preferences SET document = $2::jsonb, updated_at = now() WHERE user_id = $1
RETURNING version
"""


@router.get(
    "/users/me/preferences",
    response_model=Preferences,
    responses=declare(NOT_MODIFIED, etag=True),
    openapi_extra=conditional_headers("If-None-Match"),
)
async def read_preferences(
    caller: CurrentUser, pool: Pool, request: Request, response: Response
) -> Preferences | Response:
    """Your preferences; the defaults until you set any. `ETag` goes back in `If-Match`."""
    row = await pool.fetchrow(READ_PREFERENCES, caller.id)
    tag = entity_tag("p", caller.id, 0 if row is None else row["version"])
    if fresh(request.headers, tag):
        return not_modified(tag)
    response.headers["ETag"] = tag
    return Preferences() if row is None else Preferences.model_validate_json(row["document"])


@router.put(
    "/users/me/preferences",
    responses=declare(PRECONDITION_FAILED, PRECONDITION_REQUIRED, etag=True),
    openapi_extra=conditional_headers("If-Match", "If-Unmodified-Since"),
)
async def replace_preferences(
    body: PreferencesUpdate,
    caller: CurrentUser,
    pool: Pool,
    timezones: Timezones,
    request: Request,
    response: Response,
) -> Preferences:
    """Replace your preferences with this document; keys left out take their defaults.

    A whole-document write could undo another client's change unseen, so it needs a
    precondition: `If-Match` with the `ETag` you read (428 without one, 412 when it is
    no longer current), or `If-Match: *` to overwrite whatever is there.
    """
    if body.timezone not in timezones:
        # Raised as a field error so it reads exactly like the schema's own.
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "timezone"),
                    "msg": "Value error, not an IANA time zone name",
                    "type": "value_error",
                }
            ]
        )
    precondition = Precondition.of(request.headers, "p", caller.id, required=True)
    document = Preferences.model_validate(body.model_dump())
    encoded = document.model_dump_json()
    try:
        async with transaction(pool) as conn:
            # Locked, so the check and the write see the same version. No row yet: version 0,
            # never written (no date for If-Unmodified-Since); the insert then races only
            # other first writes, and loses to them as a stale version would.
            row = await conn.fetchrow(_LOCK, caller.id)
            if row is None:
                precondition.check(0, None)
                version = await conn.fetchval(_INSERT, caller.id, encoded)
                if version is None:  # another first write committed since our look
                    row = await conn.fetchrow(_LOCK, caller.id)
                    if row is None:  # the account was deleted since our look
                        raise Unauthenticated("The account no longer exists.")
            if row is not None:
                precondition.check(row["version"], row["updated_at"])
                version = await conn.fetchval(_UPDATE, caller.id, encoded)
    except asyncpg.ForeignKeyViolationError:
        # The account was deleted while this request was in flight.
        raise Unauthenticated("The account no longer exists.") from None
    finally:
        # Before answering: the client reads its write back from this process at once;
        # the others forget it when PostgreSQL announces it (identity/preferences_cache.py).
        lifespan_state(request)["preferences"].forget(caller.id)
    response.headers["ETag"] = entity_tag("p", caller.id, version)
    return document
