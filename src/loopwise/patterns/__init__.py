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
from loopwise.patterns.fanout import Branch, FanOutResult, fan_out, optional, required
from loopwise.patterns.offload import BlockingPool, CpuPool, PoolStats
from loopwise.patterns.watchdog import DEFAULT_LAG_BUCKETS, LagStats, LoopWatchdog

__all__ = [
    "DEFAULT_LAG_BUCKETS",
    "BlockingPool",
    "Branch",
    "ClosedResource",
    "CpuPool",
    "Deadline",
    "DeadlineExceeded",
    "FanOutResult",
    "LagStats",
    "LoopWatchdog",
    "PatternError",
    "PoolSaturated",
    "PoolStats",
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
