"""What the app's lifespan owns and hands to every request (Starlette lifespan state)."""

from __future__ import annotations

from typing import TypedDict

from loopwise.service.db import Database
from loopwise.service.jobs import BackgroundWork, Worker
from loopwise.service.settings import Settings

__all__ = ["AppState"]


class AppState(TypedDict):
    settings: Settings
    db: Database
    # The newest migration this code ships; /readyz compares the database against it.
    schema_revision: str | None
    # Best-effort in-process work, and the durable job worker (None when
    # LOOPWISE_JOBS_IN_PROCESS is off and `loopwise worker` processes run the jobs).
    background: BackgroundWork
    job_worker: Worker | None
