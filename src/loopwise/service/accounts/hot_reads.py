"""The hottest reads, served by handlers of our own behind FastAPI's declared routes.

    install_hot_reads(app)   # after the routes are added; the routes stay as declared

``GET /users/{user_id}``, ``GET /users/me`` and ``GET /users/me/preferences`` (and their
HEAD, which ``HeadAsGet`` runs as GET) are most of what clients ask. FastAPI's handler of
a route solves its dependencies, validates its parameters and validates the endpoint's
result on every request: 56% of the loop's CPU for ``GET /users/{user_id}``, of which
the session-cache lookup itself was 5% (cProfile, ``loopwise-bench request-cost
--profile``, docs/benchmark/request-cost.md). Here each of the three routes keeps its
declaration (path, parameters, response model, OpenAPI operation, the ``route`` in the
scope that metrics label by) and gets a Starlette handler: the caller from the same
:func:`~loopwise.service.deps.current_user`, the same ETags and 304s, the body encoded by
the same Pydantic serializer FastAPI uses, errors raised to the same problem handlers.
The preferences document, once read, is answered from the process's preferences cache
(``identity/preferences_cache.py``) until a write anywhere is announced.

A path parameter that is not a plain decimal id within range goes to FastAPI's handler
unchanged, so every 422 (and its order after the 401) is FastAPI's own. A differential
test (tests/service/accounts/test_hot_reads.py) drives the same requests through the app
with and without these handlers and compares every status, header and body.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from loopwise.service.accounts import preferences, users
from loopwise.service.deps import current_user
from loopwise.service.exceptions import NotFound
from loopwise.service.http.conditional import entity_tag, fresh, not_modified
from loopwise.service.state import lifespan_state

__all__ = ["install_hot_reads"]

_MEDIA_TYPE = "application/json"  # what FastAPI's own handler labels a model's JSON with
_USER = TypeAdapter(users.User)
_PREFERENCES = TypeAdapter(preferences.Preferences)
_DEFAULT_PREFERENCES = _PREFERENCES.dump_json(preferences.Preferences())
# An id FastAPI would accept unchanged: decimal, no sign, no leading zero, no spaces, at
# most 19 digits (the range check is below). Anything else takes FastAPI's path.
_PLAIN_ID = re.compile(r"[1-9][0-9]{0,18}")


def _json(body: bytes, tag: str | None = None) -> Response:
    # The headers in FastAPI's order: its own (length, type), then the endpoint's ETag.
    response = Response(body, media_type=_MEDIA_TYPE)
    if tag is not None:
        response.headers["ETag"] = tag
    return response


async def _read_user(request: Request) -> Response:
    caller = await current_user(request)
    user_id = int(request.path_params["user_id"])
    if user_id != caller.id:
        raise NotFound(f"No user with id {user_id}.")
    return _json(_USER.dump_json(users.User.of(caller)))


def _plain_id(scope: Scope) -> bool:
    raw = scope["path_params"]["user_id"]
    return _PLAIN_ID.fullmatch(raw) is not None and int(raw) <= users.BIGINT_MAX


async def _read_me(request: Request) -> Response:
    caller = await current_user(request)
    tag = entity_tag("u", caller.id, caller.version)
    if fresh(request.headers, tag):
        return not_modified(tag)
    return _json(_USER.dump_json(users.User.of(caller)), tag)


async def _read_preferences(request: Request) -> Response:
    caller = await current_user(request)
    state = lifespan_state(request)
    documents = state["preferences"]  # kept as served, forgotten on every write
    kept = documents.find(caller.id)
    if kept is not None:
        version, body = kept
        tag = entity_tag("p", caller.id, version)
        return not_modified(tag) if fresh(request.headers, tag) else _json(body, tag)
    generation = documents.generation
    row = await state["db"].pool.fetchrow(preferences.READ_PREFERENCES, caller.id)
    version = 0 if row is None else row["version"]
    tag = entity_tag("p", caller.id, version)
    if fresh(request.headers, tag):
        return not_modified(tag)
    if row is None:
        body = _DEFAULT_PREFERENCES
    else:
        document = preferences.Preferences.model_validate_json(row["document"])
        body = _PREFERENCES.dump_json(document)
    documents.keep(caller.id, version, body, generation)
    return _json(body, tag)


# The endpoint FastAPI would run, our handler of its route, and which requests it takes.
# (None: every request the route matches.)
_HANDLERS: dict[
    Callable[..., object],
    tuple[Callable[[Request], Awaitable[Response]], Callable[[Scope], bool] | None],
] = {
    users.read_user: (_read_user, _plain_id),
    users.read_me: (_read_me, None),
    preferences.read_preferences: (_read_preferences, None),
}


def _dispatch(ours: ASGIApp, fastapi: ASGIApp, takes: Callable[[Scope], bool]) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await (ours if takes(scope) else fastapi)(scope, receive, send)

    return app


def install_hot_reads(app: FastAPI) -> None:
    """Serve the hot reads' routes of ``app`` with the handlers above.

    Each route is replaced by a copy whose ASGI ``app`` (Starlette's ``Route.app``, which
    FastAPI builds from the endpoint) is ours; everything else about it stays FastAPI's.
    A copy, because the routers' route objects are shared by every app built from them.
    """
    routes = app.router.routes
    installed = 0
    for index, route in enumerate(routes):
        if isinstance(route, APIRoute) and route.endpoint in _HANDLERS:
            handler, takes = _HANDLERS[route.endpoint]
            ours = request_response(handler)
            served = copy.copy(route)
            served.app = ours if takes is None else _dispatch(ours, route.app, takes)
            routes[index] = served
            installed += 1
    if installed != len(_HANDLERS):
        raise LookupError("a hot read's route is missing from the app")
