"""One place that turns every error into RFC 9457 problem+json.

No stack trace, SQL or exception text that was not written for a client reaches one:
unexpected exceptions become a bare 500 whose log line carries the request id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import compile_path

from loopwise.patterns import PatternError
from loopwise.service.db import PoolExhausted
from loopwise.service.exceptions import ServiceError
from loopwise.service.logs import get_logger
from loopwise.service.outages import DATABASE_OUTAGES, OUTAGE_RETRY_AFTER, OutageLog
from loopwise.service.state import lifespan_state

__all__ = [
    "MEDIA_TYPE",
    "install_problem_handlers",
    "problem_body",
    "problem_response",
]

_log = get_logger("loopwise.problems")
MEDIA_TYPE = "application/problem+json"


def problem_body(status: int, detail: str | None = None, **extra: Any) -> bytes:
    title = HTTPStatus(status).phrase
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail and detail != title:
        body["detail"] = detail
    body.update(extra)
    return json.dumps(body, separators=(",", ":")).encode()


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    return Response(
        problem_body(status, detail, **extra),
        status_code=status,
        headers=headers,
        media_type=MEDIA_TYPE,
    )


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Field-level errors without echoing the (possibly huge or hostile) input back."""
    errors = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        rule = str(error.get("type") or "value_error")  # the schema says: always a string
        errors.append({"loc": loc, "msg": error.get("msg", "invalid"), "type": rule})
    return errors


async def _on_service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return problem_response(exc.status, exc.detail, headers=exc.headers)


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request, headers.get("Allow"))
    return problem_response(exc.status_code, str(exc.detail), headers=headers)


def _allowed_methods(request: Request, starlette_allow: str | None) -> str:
    # Starlette names only the first route whose path matched; RFC 9110 wants every method
    # the resource supports (GET /users/me and PATCH /users/me are two routes). The app's
    # own OpenAPI paths say which; routes left out of the schema keep Starlette's answer.
    methods = {m.strip() for m in (starlette_allow or "").split(",") if m.strip()}
    path = request.url.path
    # The schema was built at start-up (off the loop: building it reads files).
    schema = request.app.openapi_schema or {}
    for template, operations in schema.get("paths", {}).items():
        if compile_path(template)[0].match(path):
            methods |= {method.upper() for method in operations}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    # A body that is not JSON at all is a malformed request, not an invalid field.
    errors = _field_errors(exc)
    if any(e["type"] == "json_invalid" for e in errors):
        return problem_response(400, "The request body is not valid JSON.")
    return problem_response(422, "The request has invalid fields.", errors=errors)


async def _on_pool_exhausted(request: Request, exc: Exception) -> Response:
    # Every pooled connection stayed busy for LOOPWISE_DB_ACQUIRE_TIMEOUT: shed the request
    # now rather than queue it; the client may retry shortly.
    return problem_response(
        503, "The service is busy; retry shortly.", headers={"Retry-After": "1"}
    )


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    # Rendering a traceback reads the source files of every frame (linecache): file I/O
    # that must not run on the loop, so the log line is written on the blocking pool.
    # If that pool is missing or full, log without the traceback rather than block.
    path = request.url.path
    try:
        # KeyError: no lifespan state, e.g. an app whose lifespan never ran.
        blocking = lifespan_state(request)["blocking"]
        await blocking.run(_log_with_traceback, path, exc)
    except (KeyError, PatternError):
        _log.error("unhandled_exception", path=path, error=type(exc).__name__)
    return problem_response(500)


def _log_with_traceback(path: str, exc: Exception) -> None:
    _log.error("unhandled_exception", path=path, exc_info=exc)


def _on_database_outage(outages: OutageLog) -> Any:
    async def handler(request: Request, exc: Exception) -> Response:
        outages.failed(exc, _log)
        return problem_response(
            503,
            "The database is unavailable; retry shortly.",
            headers={"Retry-After": str(OUTAGE_RETRY_AFTER)},
        )

    return handler


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _on_service_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(PoolExhausted, _on_pool_exhausted)
    # Specific classes, so Starlette's ExceptionMiddleware answers them: a handler for
    # `Exception` runs in ServerErrorMiddleware, which re-raises after answering, and the
    # server then logs its own traceback of the same error.
    outage = _on_database_outage(OutageLog())
    for kind in DATABASE_OUTAGES:
        app.add_exception_handler(kind, outage)
    app.add_exception_handler(Exception, _on_unexpected)
