"""What each operation answers besides its success, declared beside the route in one line.

    @router.patch(
        "/users/me",
        responses=declare(WRONG_PASSWORD, LOGIN_THROTTLED, PRECONDITION_FAILED, etag=True),
        openapi_extra=conditional_headers("If-Match", "If-Unmodified-Since"),
    )

A route names the answers its own code produces (an :class:`Answer`: a status, when it
happens, the headers it carries); :func:`loopwise.service.http.problems.document_problems` adds
what any request can meet whatever its route (:data:`EVERYWHERE`, 401 where a token is
required, 422 where there is input to validate) and renders every 4xx/5xx body as
``Problem``. Generated clients then know every status: openapi-python-client returns
``None`` (or raises ``UnexpectedStatus``) for one it was not told about, and
openapi-typescript types only the declared ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

__all__ = [
    "BUSY",
    "EVERYWHERE",
    "HASHING_BUSY",
    "HEADERS",
    "INVALID",
    "LOGIN_THROTTLED",
    "MALFORMED",
    "NOT_MODIFIED",
    "PRECONDITION_FAILED",
    "PRECONDITION_REQUIRED",
    "REQUEST_HEADERS",
    "TOO_LARGE",
    "UNAUTHENTICATED",
    "UNEXPECTED",
    "Answer",
    "conditional_headers",
    "declare",
    "header_ref",
    "merge_answer",
]


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer an operation may give: ``Answer(409, "The email is taken.")``.

    Args:
        status: the HTTP status.
        when: what makes the service answer so, for the client's developer.
        headers: response headers it always carries, by name (keys of :data:`HEADERS`).
    """

    status: int
    when: str
    headers: tuple[str, ...] = ()


# Response headers a client may need to read, each declared once as a component.
HEADERS: dict[str, dict[str, Any]] = {
    "Retry-After": {
        "description": "Seconds to wait before retrying (RFC 9110 §10.2.3).",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    },
    "WWW-Authenticate": {
        "description": "The scheme to authenticate with: `Bearer` (RFC 9110 §11.6.1).",
        "required": True,
        "schema": {"type": "string"},
    },
    "ETag": {
        "description": "The version of the resource's representation; send it back in "
        "`If-Match` to update, in `If-None-Match` to revalidate.",
        "required": True,
        "schema": {"type": "string"},
    },
}

# Request headers of conditional requests (RFC 9110 §13.1), declared once as components.
REQUEST_HEADERS: dict[str, dict[str, Any]] = {
    "If-Match": {
        "name": "If-Match",
        "in": "header",
        "description": "The ETag you read (or `*`): the write happens only if the resource "
        "still has it, else 412.",
        "schema": {"type": "string"},
    },
    "If-None-Match": {
        "name": "If-None-Match",
        "in": "header",
        "description": "The ETag you hold: 304 with no body while it is still current.",
        "schema": {"type": "string"},
    },
    "If-Unmodified-Since": {
        "name": "If-Unmodified-Since",
        "in": "header",
        "description": "An HTTP-date: the write happens only if the resource has not "
        "changed since (to the second), else 412. Ignored when `If-Match` is sent.",
        "schema": {"type": "string"},
    },
}


def header_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


def declare(*answers: Answer, etag: bool = False) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that may give ``answers``.

    Answers sharing a status are merged: one description listing each cause, the union
    of their headers. ``etag=True`` declares the ``ETag`` header on the 200 answer.
    """
    responses: dict[int | str, dict[str, Any]] = {}
    for answer in answers:
        merge_answer(responses, answer)
    if etag:
        responses.setdefault(200, {}).setdefault("headers", {})["ETag"] = header_ref("ETag")
    return responses


def merge_answer(responses: dict[Any, dict[str, Any]], answer: Answer) -> None:
    """Add ``answer`` to an operation's ``responses``, keyed by int or by str status."""
    # FastAPI's ``responses=`` takes int keys; the finished schema has str ones.
    key: int | str = answer.status
    if any(isinstance(existing, str) for existing in responses):
        key = str(key)
    response = responses.setdefault(key, {})
    described = response.get("description")
    # FastAPI's own placeholders ("Validation Error") give way to what the service says.
    if not described or described in _PLACEHOLDERS:
        response["description"] = answer.when
    elif answer.when not in described:
        # Several causes share the status: a Markdown list, one cause a line.
        listed = described if described.startswith("- ") else f"- {described}"
        response["description"] = f"{listed}\n- {answer.when}"
    for name in answer.headers:
        response.setdefault("headers", {})[name] = header_ref(name)


_PLACEHOLDERS = frozenset({"Validation Error", *(s.phrase for s in HTTPStatus)})


def conditional_headers(*names: str) -> dict[str, Any]:
    """The ``openapi_extra=`` declaring the conditional request headers a route honours.

    The route reads them from ``request.headers`` itself: declared as FastAPI ``Header``
    parameters they would be validated on every request, for nothing.
    """
    unknown = set(names) - REQUEST_HEADERS.keys()
    if unknown:
        raise ValueError(f"`names` must be among {sorted(REQUEST_HEADERS)}, got {sorted(unknown)}")
    return {"parameters": [{"$ref": f"#/components/parameters/{name}"} for name in names]}


# The catalogue: answers more than one route gives, or the app adds to every route.
MALFORMED = Answer(400, "The request is malformed: its body is not JSON, or a header is invalid.")
UNAUTHENTICATED = Answer(
    401, "The bearer token is missing, invalid, expired or revoked.", ("WWW-Authenticate",)
)
TOO_LARGE = Answer(413, "The request body is larger than the service accepts.")
INVALID = Answer(422, "A field breaks a rule; `errors` names each field and rule.")
UNEXPECTED = Answer(500, "An unexpected error; its log line carries the `X-Request-ID`.")
BUSY = Answer(
    503,
    "The service is at capacity or cannot reach its database; retry after `Retry-After`.",
    ("Retry-After",),
)
HASHING_BUSY = Answer(503, "Password hashing is at capacity.", ("Retry-After",))
LOGIN_THROTTLED = Answer(
    429, "Too many failed logins for this account or address.", ("Retry-After",)
)
NOT_MODIFIED = Answer(304, "The `If-None-Match` ETag is still current; no body.", ("ETag",))
PRECONDITION_FAILED = Answer(
    412,
    "The resource changed since the `If-Match` ETag or `If-Unmodified-Since` date; "
    "`ETag` is the current one.",
    ("ETag",),
)
BODY_TOO_SLOW = Answer(
    408, "The request body did not arrive within `LOOPWISE_BODY_TIMEOUT` (http/bodies.py)."
)
PRECONDITION_REQUIRED = Answer(
    428, "The write replaces the whole resource and needs `If-Match` or `If-Unmodified-Since`."
)

# What any request may meet whatever its route: bad framing, a body over the limit, a crash.
# (503 is added where admission control or the database can answer it: every route but
# the probes; 401 where a token is required; 422 where there is input to validate.)
EVERYWHERE: tuple[Answer, ...] = (MALFORMED, BODY_TOO_SLOW, TOO_LARGE, UNEXPECTED)
