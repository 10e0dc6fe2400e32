"""Errors raised by ``loopwise.patterns``, all under one root.

    PatternError
    ├── DeadlineExceeded (also a TimeoutError)   the inherited deadline ran out
    ├── ResourceClosed                            used before opening or after closing, or
    │                                             opened twice: a resource never reopens
    ├── Saturated                                 a bounded resource would not take more work
    │   │                                         within the time left (limits, pools)
    │   ├── PoolSaturated                         an off-loop pool's queue was full, or no
    │   │                                         worker freed up within the deadline
    │   └── LimitTimeout                          no slot (or rate token) came within the wait
    │                                             allowed: the deadline or ``max_wait``
    ├── CircuitOpen                               the breaker is failing calls fast
    └── DownstreamError                           a downstream call failed for good
        ├── DownstreamStatusError                 it answered 5xx or 429 (after any retries)
        ├── DownstreamTimeout                     its own per-call timeout ran out
        └── DownstreamUnreachable                 connect or transport failure

Each pattern module adds its own subclasses here, so one ``except PatternError`` catches
everything this package raises on purpose.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "CircuitOpen",
    "DeadlineExceeded",
    "DownstreamError",
    "DownstreamStatusError",
    "DownstreamTimeout",
    "DownstreamUnreachable",
    "LimitTimeout",
    "PatternError",
    "PoolSaturated",
    "ResourceClosed",
    "Saturated",
]


class PatternError(Exception):
    """Root of every error ``loopwise.patterns`` raises on purpose."""


class DeadlineExceeded(PatternError, TimeoutError):
    """The deadline in force ran out before the work finished.

    Attributes:
        budget: the seconds the deadline allowed when it was set, if known.
    """

    def __init__(self, message: str = "deadline exceeded", *, budget: float | None = None):
        super().__init__(message)
        self.budget = budget


class Saturated(PatternError):
    """A bounded resource had no room within the caller's time; the caller should shed.

    Attributes:
        resource: the name of the limit or pool that refused.
    """

    def __init__(self, resource: str, message: str | None = None) -> None:
        super().__init__(message or f"{resource} is saturated")
        self.resource = resource


class ResourceClosed(PatternError):
    """The resource is not open: not yet opened, closed (``aclose()``), or opened twice.

    Every resource built on :class:`~loopwise.patterns.lifecycle.AsyncResource` raises this
    one type, in the toolkit and in the service alike.

    Attributes:
        resource: the name of the closed resource.
    """

    def __init__(self, resource: str, message: str | None = None) -> None:
        super().__init__(message or f"{resource} is closed and cannot be used again")
        self.resource = resource


class PoolSaturated(Saturated):
    """An off-loop pool refused a call (``loopwise.patterns.offload``).

    Attributes:
        resource: the pool's name.
        reason: ``"queue_full"`` (refused at once) or ``"no_worker_in_time"`` (waited
            until the deadline left no time).
    """

    def __init__(self, resource: str, reason: str) -> None:
        what = "its queue is full" if reason == "queue_full" else "no worker freed up in time"
        super().__init__(resource, f"pool {resource!r} is saturated: {what}")
        self.reason = reason


class LimitTimeout(Saturated):
    """Waiting for a concurrency slot or a rate token would outlast the time allowed.

    Attributes:
        key: the key whose limit refused (a host, a downstream name).
        limit: which limit refused: ``"concurrency"`` or ``"rate"``.
        waited: seconds spent waiting before giving up.
    """

    def __init__(
        self, resource: str, *, key: str, limit: Literal["concurrency", "rate"], waited: float
    ) -> None:
        super().__init__(
            resource, f"{resource}: no {limit} slot for {key!r} within {waited:.3f}s of waiting"
        )
        self.key = key
        self.limit = limit
        self.waited = waited


class CircuitOpen(PatternError):
    """The circuit breaker is open: calls fail fast instead of reaching the downstream.

    Attributes:
        name: the breaker's name (usually the downstream's).
        retry_after: seconds until the breaker lets a probe through.
    """

    def __init__(self, name: str, *, retry_after: float) -> None:
        super().__init__(f"circuit {name!r} is open; next probe in {retry_after:.3f}s")
        self.name = name
        self.retry_after = retry_after


class DownstreamError(PatternError):
    """A call to a downstream failed, after whatever retries were allowed.

    Attributes:
        downstream: the downstream's name.
        retry_after: seconds the downstream asked us to wait (``Retry-After``), if any.
    """

    def __init__(self, downstream: str, message: str, *, retry_after: float | None = None):
        super().__init__(f"{downstream}: {message}")
        self.downstream = downstream
        self.retry_after = retry_after


class DownstreamStatusError(DownstreamError):
    """The downstream answered with a failure status (5xx, or 429 when shedding load).

    Attributes:
        status: the HTTP status code.
    """

    def __init__(self, downstream: str, *, status: int, retry_after: float | None = None):
        super().__init__(downstream, f"answered HTTP {status}", retry_after=retry_after)
        self.status = status


class DownstreamTimeout(DownstreamError):
    """The downstream did not answer within its own per-call timeout."""


class DownstreamUnreachable(DownstreamError):
    """The connection could not be made, or broke before a response arrived."""
