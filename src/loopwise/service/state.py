"""What the app's lifespan owns and hands to every request (Starlette lifespan state)."""

from __future__ import annotations

from typing import TypedDict

from loopwise.service.db import Database
from loopwise.service.downstreams import Downstreams
from loopwise.service.settings import Settings

__all__ = ["AppState"]


class AppState(TypedDict):
    settings: Settings
    db: Database
    # The newest migration this code ships; /readyz compares the database against it.
    schema_revision: str | None
    # The optional downstream services (loyalty, shipments); stats() for /metrics.
    downstreams: Downstreams
