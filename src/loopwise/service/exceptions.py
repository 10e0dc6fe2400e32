"""Errors the service maps to HTTP, all rendered as RFC 9457 problem+json by one handler.

    ServiceError
    ├── BadRequest            400
    ├── Unauthenticated       401  (carries WWW-Authenticate)
    ├── Forbidden             403
    ├── NotFound              404
    ├── Conflict              409
    ├── PreconditionFailed    412  (If-Match / If-Unmodified-Since did not hold)
    ├── PreconditionRequired  428  (a whole-resource write without a precondition)
    ├── TooManyRequests       429  (carries retry_after)
    └── Unavailable           503  (carries retry_after)

Query and domain code raises these; it never raises ``HTTPException``.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "NotFound",
    "PreconditionFailed",
    "PreconditionRequired",
    "ServiceError",
    "TooManyRequests",
    "Unauthenticated",
    "Unavailable",
]


class ServiceError(Exception):
    """Root of the errors a client may see. ``detail`` is safe to show to that client."""

    status: int = 500
    title: str = "Internal Server Error"

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = headers or {}


class BadRequest(ServiceError):
    status, title = 400, "Bad Request"


class Unauthenticated(ServiceError):
    status, title = 401, "Unauthorized"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServiceError):
    status, title = 403, "Forbidden"


class NotFound(ServiceError):
    status, title = 404, "Not Found"


class Conflict(ServiceError):
    status, title = 409, "Conflict"


class PreconditionFailed(ServiceError):
    status, title = 412, "Precondition Failed"


class PreconditionRequired(ServiceError):
    status, title = 428, "Precondition Required"


class _RetryLater(ServiceError):
    def __init__(self, detail: str | None = None, *, retry_after: float = 1.0) -> None:
        self.retry_after = max(1, round(retry_after))
        super().__init__(detail, headers={"Retry-After": str(self.retry_after)})


class TooManyRequests(_RetryLater):
    status, title = 429, "Too Many Requests"


class Unavailable(_RetryLater):
    status, title = 503, "Service Unavailable"
