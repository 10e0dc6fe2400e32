"""Async patterns for production services, usable on their own (no web framework needed)."""

from loopwise.patterns.deadlines import (
    Deadline,
    current_deadline,
    deadline,
    move_on_after,
    or_fallback,
    time_left,
)
from loopwise.patterns.exceptions import DeadlineExceeded, PatternError, Saturated

__all__ = [
    "Deadline",
    "DeadlineExceeded",
    "PatternError",
    "Saturated",
    "current_deadline",
    "deadline",
    "move_on_after",
    "or_fallback",
    "time_left",
]
