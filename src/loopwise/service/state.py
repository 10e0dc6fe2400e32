"""What the app's lifespan owns and hands to every request (Starlette lifespan state)."""

from __future__ import annotations

from typing import TypedDict

from loopwise.service.accounts.passwords import Passwords
from loopwise.service.db import Database
from loopwise.service.settings import Settings

__all__ = ["AppState"]


class AppState(TypedDict):
    settings: Settings
    db: Database
    # The newest migration this code ships; /readyz compares the database against it.
    schema_revision: str | None
    # Accounts: argon2id on its own bounded thread pool; IANA zone names for preferences.
    passwords: Passwords
    timezones: frozenset[str]
