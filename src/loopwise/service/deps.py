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
from fastapi.dependencies.models import Dependant
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
    "BEARER_SCHEME",
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
    "authenticates",
    "current_user",
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


# The scheme as /openapi.json (and /docs' Authorize button) describes it; ``authenticates``
# says which routes require it. Documentation only: see ``current_user``.
BEARER_SCHEME = HTTPBearer(
    auto_error=False, scheme_name="BearerAuth", description="The token `POST /login` returned."
)


async def current_user(request: Request) -> Caller:
    """The caller behind ``Authorization: Bearer <token>``: from memory, or one query.

    A plain function, not the ``HTTPBearer`` instance above: FastAPI works out the OAuth
    scopes of a security-scheme dependency on every request (none here), and that was
    ~15% of the loop's CPU for ``GET /users/{id}`` (``loopwise-bench request-cost``,
    docs/benchmark/request-cost.md). The OpenAPI document gets the scheme from
    :func:`authenticates` instead, so it reads as before.
    """
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("A bearer token is required.")
    state = lifespan_state(request)
    caller = await state["sessions"].find_caller(state["db"].pool, token.strip())
    if caller is None:
        raise Unauthenticated("The token is invalid, expired or revoked.")
    return caller


def authenticates(dependant: Dependant) -> bool:
    """Whether ``dependant`` (a route's, with its sub-dependencies) requires a bearer token."""
    return any(sub.call is current_user or authenticates(sub) for sub in dependant.dependencies)


Db = Annotated[Database, Depends(_db)]
Pool = Annotated[asyncpg.Pool, Depends(_pool)]
Settings_ = Annotated[Settings, Depends(_settings)]
Hasher = Annotated[Passwords, Depends(_passwords)]
Timezones = Annotated[frozenset[str], Depends(_timezones)]
ClientAddress = Annotated[str, Depends(_client_address)]
CurrentUser = Annotated[Caller, Depends(current_user)]
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
