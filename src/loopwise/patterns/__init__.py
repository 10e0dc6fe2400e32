"""Async patterns for production services, usable on their own (no web framework needed)."""

from loopwise.patterns.deadlines import (
    Deadline,
    current_deadline,
    deadline,
    move_on_after,
    or_fallback,
    time_left,
)
from loopwise.patterns.exceptions import (
    ClosedResource,
    DeadlineExceeded,
    PatternError,
    PoolSaturated,
    Saturated,
)
from loopwise.patterns.offload import BlockingPool, CpuPool, PoolStats

__all__ = [
    "BlockingPool",
    "ClosedResource",
    "CpuPool",
    "Deadline",
    "DeadlineExceeded",
    "PatternError",
    "PoolSaturated",
    "PoolStats",
    "Saturated",
    "current_deadline",
    "deadline",
    "move_on_after",
    "or_fallback",
    "time_left",
]
