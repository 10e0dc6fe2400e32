"""Typed dependencies, in one place: routes declare what they need by annotation.

@router.get("/things")
async def things(pool: Pool, caller: CurrentUser) -> ...

Every dependency is ``async def``, even those that only read request state: FastAPI runs
a plain ``def`` dependency on its thread pool, a thread hop per dependency per request
(three on the overview) that a busy loop pays for in latency.
"""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from loopwise.service.db import Database
from loopwise.service.downstreams import Downstreams
from loopwise.service.exceptions import Forbidden, Unauthenticated
from loopwise.service.identity.passwords import Passwords
from loopwise.service.identity.session_cache import SessionCache
from loopwise.service.identity.sessions import Caller
from loopwise.service.settings import Settings
from loopwise.service.state import lifespan_state

__all__ = [
    "ClientAddress",
    "CurrentUser",
    "Db",
    "Downstreams_",
    "Hasher",
    "Pool",
    "Sessions",
    "Settings_",
    "Timezones",
    "VerifiedUser",
]


async def _db(request: Request) -> Database:
    return lifespan_state(request)["db"]


async def _pool(request: Request) -> asyncpg.Pool:
    return lifespan_state(request)["db"].pool


async def _downstreams(request: Request) -> Downstreams:
    return lifespan_state(request)["downstreams"]


async def _settings(request: Request) -> Settings:
    return lifespan_state(request)["settings"]


async def _sessions(request: Request) -> SessionCache:
    return lifespan_state(request)["sessions"]


async def _passwords(request: Request) -> Passwords:
    return lifespan_state(request)["passwords"]


async def _timezones(request: Request) -> frozenset[str]:
    return lifespan_state(request)["timezones"]


async def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class _SessionBearer(HTTPBearer):
    """The caller behind ``Authorization: Bearer <token>``: from memory, or one query.

    A subclass of FastAPI's ``HTTPBearer`` so the OpenAPI schema (and /docs' Authorize
    button) describes the scheme, while the lookup stays a single dependency: the
    hottest routes pay for one header parse and a session-cache lookup (one fused
    session+user query on a miss), nothing else.
    """

    def __init__(self) -> None:
        super().__init__(
            auto_error=False,
            scheme_name="BearerAuth",
            description="The token `POST /login` returned.",
        )

    async def __call__(self, request: Request) -> Caller:  # type: ignore[override]  # returns the caller, not the credentials
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("A bearer token is required.")
        state = lifespan_state(request)
        caller = await state["sessions"].find_caller(state["db"].pool, token.strip())
        if caller is None:
            raise Unauthenticated("The token is invalid, expired or revoked.")
        return caller


Db = Annotated[Database, Depends(_db)]
Pool = Annotated[asyncpg.Pool, Depends(_pool)]
Settings_ = Annotated[Settings, Depends(_settings)]
Hasher = Annotated[Passwords, Depends(_passwords)]
Timezones = Annotated[frozenset[str], Depends(_timezones)]
ClientAddress = Annotated[str, Depends(_client_address)]
CurrentUser = Annotated[Caller, Depends(_SessionBearer())]
Sessions = Annotated[SessionCache, Depends(_sessions)]  # sessions.forget_session(hash) ...
Downstreams_ = Annotated[Downstreams, Depends(_downstreams)]


async def _verified_user(caller: CurrentUser) -> Caller:
    # The rule (docs/operations/accounts.md): an unverified account may sign in, read and
    # change its profile and preferences, verify, reset its password and delete itself;
    # what has consequences beyond the account (placing orders) waits for a proven address.
    if not caller.email_verified:
        raise Forbidden("Verify your email address first: see POST /verify-email.")
    return caller


VerifiedUser = Annotated[Caller, Depends(_verified_user)]  # the caller, address proven
