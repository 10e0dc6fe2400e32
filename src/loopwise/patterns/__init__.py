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
from loopwise.patterns.fanout import Branch, FanOutResult, fan_out, optional, required

__all__ = [
    "Branch",
    "Deadline",
    "DeadlineExceeded",
    "FanOutResult",
    "PatternError",
    "Saturated",
    "current_deadline",
    "deadline",
    "fan_out",
    "move_on_after",
    "optional",
    "or_fallback",
    "required",
    "time_left",
]
