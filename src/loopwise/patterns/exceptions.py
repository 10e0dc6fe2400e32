"""Errors raised by ``loopwise.patterns``, all under one root.

    PatternError
    ├── DeadlineExceeded (also a TimeoutError)   the inherited deadline ran out
    └── Saturated                                 a bounded resource would not take more work
                                                  within the time left (limits, pools)

Each pattern module adds its own subclasses here, so one ``except PatternError`` catches
everything this package raises on purpose.
"""

from __future__ import annotations

__all__ = ["DeadlineExceeded", "PatternError", "Saturated"]


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
