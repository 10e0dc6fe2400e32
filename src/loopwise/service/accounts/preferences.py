"""Preferences: one JSON document per user with a schema.

Known keys are typed, unknown keys are refused (422), and every value is bounded, so the
stored document is a few hundred bytes at most; the table's CHECK (``pg_column_size <=
4096``) backs that up. Time zones are checked against the IANA names this machine knows,
loaded once at start-up off the event loop (reading them walks the tz database on disk).
"""

from __future__ import annotations

import zoneinfo
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from loopwise.service.deps import CurrentUser, Pool, Timezones
from loopwise.service.exceptions import Unauthenticated

__all__ = ["Preferences", "load_timezones", "router"]

router = APIRouter(tags=["preferences"])


class Preferences(BaseModel):
    """The preferences document. ``PUT`` replaces it whole; absent keys take defaults."""

    model_config = ConfigDict(strict=True, extra="forbid")

    language: Annotated[
        str,
        Field(
            pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$",
            max_length=35,
            description="A BCP 47 language tag, e.g. `en`, `pt-BR`.",
        ),
    ] = "en"
    timezone: Annotated[
        str, Field(max_length=64, description="An IANA time zone, e.g. `Europe/Paris`.")
    ] = "UTC"
    theme: Literal["system", "light", "dark"] = "system"
    marketing_emails: bool = False
    order_updates: bool = True
    page_size: Annotated[int, Field(ge=1, le=100)] = 20


def load_timezones() -> frozenset[str]:
    """The IANA zone names known here. Blocking (reads the tz database): call off the loop."""
    return frozenset(zoneinfo.available_timezones() | {"UTC"})


_READ = "SELECT document FROM preferences WHERE user_id = $1"
_WRITE = """
INSERT INTO preferences (user_id, document) VALUES ($1, $2::jsonb)
ON CONFLICT (user_id) DO UPDATE SET document = EXCLUDED.document, updated_at = now()
"""


@router.get("/users/me/preferences")
async def read_preferences(caller: CurrentUser, pool: Pool) -> Preferences:
    """Your preferences; the defaults until you set any."""
    document = await pool.fetchval(_READ, caller.id)
    return Preferences() if document is None else Preferences.model_validate_json(document)


@router.put("/users/me/preferences")
async def replace_preferences(
    body: Preferences, caller: CurrentUser, pool: Pool, timezones: Timezones
) -> Preferences:
    """Replace your preferences with this document."""
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
    try:
        await pool.execute(_WRITE, caller.id, body.model_dump_json())
    except asyncpg.ForeignKeyViolationError:
        # The account was deleted while this request was in flight.
        raise Unauthenticated("The account no longer exists.") from None
    return body
