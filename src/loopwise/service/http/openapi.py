"""The OpenAPI document says what the service does on the wire, for generated clients.

FastAPI writes the schema from the routes; :func:`document_api` completes it with what
FastAPI cannot see: the answers of the problem handlers and middleware on every route
(:data:`~loopwise.service.http.responses.EVERYWHERE`, 401 and ``WWW-Authenticate`` where a
token is required, 503 and ``Retry-After`` wherever admission control or the database
can shed), errors as ``application/problem+json`` with a ``Problem`` schema that matches
the bytes sent (keys the server omits are not required and have no ``default``), the
headers a client must read, the conditional request headers, and ``security: []`` on
public operations. The tests drive every operation into each declared answer.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.encoders import jsonable_encoder
from fastapi.routing import APIRoute
from fastapi.security.base import SecurityBase

from loopwise.service.http.problems import MEDIA_TYPE
from loopwise.service.http.responses import (
    BUSY,
    EVERYWHERE,
    HEADERS,
    INVALID,
    REQUEST_HEADERS,
    UNAUTHENTICATED,
    merge_answer,
)

__all__ = ["DESCRIPTION", "FIELD_ERROR_SCHEMA", "PROBLEM_SCHEMA", "document_api"]

DESCRIPTION = """\
Every error is `application/problem+json` (RFC 9457) with the `Problem` schema; each
operation lists the statuses it can answer. A method a path does not list answers 405 with
an `Allow` header naming those it supports.

Profiles and preferences carry an `ETag`: send it in `If-None-Match` to revalidate (304) and
in `If-Match` to update (412 if it changed meanwhile). `PUT /users/me/preferences` replaces
the whole document and requires `If-Match` (428 without; `If-Match: *` overwrites).
"""

FIELD_ERROR_SCHEMA: dict[str, Any] = {
    "title": "FieldError",
    "type": "object",
    "required": ["loc", "msg", "type"],
    "properties": {
        "loc": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Where: `body`, `query`, `path` or `header`, then the field's path.",
        },
        "msg": {"type": "string", "description": "The rule, in words."},
        "type": {"type": "string", "description": "The rule's name, e.g. `string_too_short`."},
    },
}

# The wire, exactly: `type`, `title` and `status` are always sent; `detail` and `errors` only
# when there is something to say, so they are optional and never null. Open to additions:
# RFC 9457 §3.2 lets a problem type carry extension members.
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details: every error this service answers has this shape.",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {
            "type": "string",
            "format": "uri-reference",
            "description": "`about:blank`: the status and `title` say what kind of problem.",
        },
        "title": {"type": "string", "description": "The status's reason phrase."},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {
            "type": "string",
            "description": "What went wrong with this request; absent when `title` says it all.",
        },
        "errors": {
            "type": "array",
            "items": {"$ref": "#/components/schemas/FieldError"},
            "description": "On 422 only: each invalid field and the rule it breaks.",
        },
    },
}


def _name_operations(app: FastAPI) -> None:
    """Each operation's id is its route function's name (``read_me``, ``update_me``).

    Generated clients name their functions after it; FastAPI's default
    (``read_me_users_me_get``) repeats the path and method in every one.

    Raises:
        ValueError: two routes share a function name.
    """
    seen: dict[str, str] = {}
    for route in app.routes:
        if isinstance(route, APIRoute) and route.include_in_schema:
            methods = route.methods or set()
            where = f"{sorted(methods)} {route.path}"
            if seen.setdefault(route.name, where) != where:
                first = seen[route.name]
                raise ValueError(f"two routes are named {route.name!r}: {first}, {where}")
            # A route serving several methods keeps FastAPI's per-method ids (unique).
            if len(methods) == 1:
                route.operation_id = route.operation_id or route.name


def document_api(
    app: FastAPI,
    *,
    shed_exempt: Collection[str],
    scheme: SecurityBase,
    requires_scheme: Callable[[Dependant], bool],
) -> None:
    """Complete ``app``'s OpenAPI schema (see the module's docstring); built once, cached.

    Args:
        app: the application, its routes already added or added later.
        shed_exempt: paths admission control never sheds (the probes): no generic 503.
        scheme: the security scheme of the routes ``requires_scheme`` names, documented
            as FastAPI documents a scheme used as a dependency; the routes' own
            dependency is a cheaper plain function (``service/deps.py``).
        requires_scheme: whether a route's dependant requires ``scheme``.
    """
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _name_operations(app)
            schema = build()
            _document_scheme(app, schema, scheme, requires_scheme)
            app.openapi_schema = _complete(schema, frozenset(shed_exempt))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def _document_scheme(
    app: FastAPI,
    schema: dict[str, Any],
    scheme: SecurityBase,
    requires_scheme: Callable[[Dependant], bool],
) -> None:
    """Add ``scheme`` where FastAPI would have put it, had it been the dependency itself.

    The same keys in the same places (``security`` after ``operationId``, the scheme
    after the component schemas), so the document is the one FastAPI wrote for it.
    """
    requirement: list[dict[str, list[str]]] = [{scheme.scheme_name: []}]
    used = False
    for route in app.routes:
        if not (
            isinstance(route, APIRoute)
            and route.include_in_schema
            and requires_scheme(route.dependant)
        ):
            continue
        for method in route.methods or ():
            path = schema["paths"][route.path_format]
            path[method.lower()] = _insert_after(
                path[method.lower()], "operationId", "security", requirement
            )
            used = True
    if used:
        model = jsonable_encoder(scheme.model, by_alias=True, exclude_none=True)
        schema["components"] = _insert_after(
            schema.get("components", {}), "schemas", "securitySchemes", {scheme.scheme_name: model}
        )


def _insert_after(mapping: dict[str, Any], after: str, key: str, value: Any) -> dict[str, Any]:
    """``mapping`` with ``key`` set just after ``after`` (or first, if absent)."""
    items = list(mapping.items())
    at = next((n + 1 for n, (name, _) in enumerate(items) if name == after), 0)
    items.insert(at, (key, value))
    return dict(items)


def _complete(schema: dict[str, Any], shed_exempt: frozenset[str]) -> dict[str, Any]:
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["FieldError"] = FIELD_ERROR_SCHEMA
    schemas["Problem"] = PROBLEM_SCHEMA
    components["headers"] = HEADERS
    components["parameters"] = REQUEST_HEADERS
    problem = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            answers = list(EVERYWHERE)
            if path not in shed_exempt:
                answers.append(BUSY)
            if operation.get("security"):
                answers.append(UNAUTHENTICATED)
            else:
                operation["security"] = []  # public: no token (Redocly: security-defined)
            if operation.get("requestBody") or any(
                "$ref" not in parameter for parameter in operation.get("parameters", ())
            ):
                answers.append(INVALID)
            for answer in answers:
                merge_answer(responses, answer)
            for status, response in responses.items():
                if status == "304":
                    response.pop("content", None)  # FastAPI gives every extra answer one
                elif status[0] in "45":
                    response["content"] = problem
            operation["responses"] = dict(sorted(responses.items()))
    return schema
