"""Typed dependencies, in one place: routes declare what they need by annotation.

@router.get("/things")
async def things(pool: Pool) -> ...
"""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends, Request

from loopwise.service.db import Database
from loopwise.service.downstreams import Downstreams
from loopwise.service.settings import Settings

__all__ = ["Db", "Downstreams_", "Pool", "Settings_"]


def _db(request: Request) -> Database:
    db: Database = request.state.db
    return db


def _pool(request: Request) -> asyncpg.Pool:
    db: Database = request.state.db
    return db.pool


def _downstreams(request: Request) -> Downstreams:
    downstreams: Downstreams = request.state.downstreams
    return downstreams


def _settings(request: Request) -> Settings:
    settings: Settings = request.state.settings
    return settings


Db = Annotated[Database, Depends(_db)]
Pool = Annotated[asyncpg.Pool, Depends(_pool)]
Settings_ = Annotated[Settings, Depends(_settings)]
Downstreams_ = Annotated[Downstreams, Depends(_downstreams)]
