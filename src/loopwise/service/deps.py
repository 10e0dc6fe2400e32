"""Typed dependencies, in one place: routes declare what they need by annotation.

@router.get("/things")
async def things(pool: Pool) -> ...
"""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends, Request

from loopwise.patterns import BlockingPool, CpuPool
from loopwise.service.db import Database
from loopwise.service.settings import Settings

__all__ = ["Blocking", "Cpu", "Db", "Pool", "Settings_"]


def _db(request: Request) -> Database:
    db: Database = request.state.db
    return db


def _pool(request: Request) -> asyncpg.Pool:
    db: Database = request.state.db
    return db.pool


def _settings(request: Request) -> Settings:
    settings: Settings = request.state.settings
    return settings


def _blocking(request: Request) -> BlockingPool:
    pool: BlockingPool = request.state.blocking
    return pool


def _cpu(request: Request) -> CpuPool:
    pool: CpuPool = request.state.cpu
    return pool


Blocking = Annotated[BlockingPool, Depends(_blocking)]  # await blocking.run(fn, ...)
Cpu = Annotated[CpuPool, Depends(_cpu)]  # await cpu.run(fn, ...)
Db = Annotated[Database, Depends(_db)]
Pool = Annotated[asyncpg.Pool, Depends(_pool)]
Settings_ = Annotated[Settings, Depends(_settings)]
