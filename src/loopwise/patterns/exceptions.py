"""Errors raised by ``loopwise.patterns``, all under one root.

    PatternError
    ├── DeadlineExceeded (also a TimeoutError)   the inherited deadline ran out
    ├── ClosedResource                            the resource was closed; it cannot be reused
    └── Saturated                                 a bounded resource would not take more work
        │                                         within the time left (limits, pools)
        └── PoolSaturated                         an off-loop pool's queue was full, or no
                                                  worker freed up within the deadline

Each pattern module adds its own subclasses here, so one ``except PatternError`` catches
everything this package raises on purpose.
"""

from __future__ import annotations

__all__ = ["ClosedResource", "DeadlineExceeded", "PatternError", "PoolSaturated", "Saturated"]


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


class ClosedResource(PatternError):
    """The resource was closed (``aclose()``); it refuses new work and cannot be reopened.

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
