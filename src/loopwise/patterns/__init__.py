"""Async patterns for production services, usable on their own (no web framework needed)."""

from loopwise.patterns.breaker import Attempt, BreakerStats, CircuitBreaker, CircuitState
from loopwise.patterns.clock import Clock, LoopClock
from loopwise.patterns.deadlines import (
    Deadline,
    current_deadline,
    deadline,
    move_on_after,
    or_fallback,
    time_left,
)
from loopwise.patterns.exceptions import (
    CircuitOpen,
    DeadlineExceeded,
    DownstreamError,
    DownstreamStatusError,
    DownstreamTimeout,
    DownstreamUnreachable,
    LimitTimeout,
    PatternError,
    ResourceClosed,
    Saturated,
)
from loopwise.patterns.fetch import Outcome, fetch_all, stream_all
from loopwise.patterns.limits import KeyedLimits, KeyStats, LimitsStats
from loopwise.patterns.outbound import Downstream, DownstreamStats
from loopwise.patterns.retries import (
    RetryBudget,
    RetryBudgetStats,
    RetryOn,
    RetryPolicy,
    retry,
)

__all__ = [
    "Attempt",
    "BreakerStats",
    "CircuitBreaker",
    "CircuitOpen",
    "CircuitState",
    "Clock",
    "Deadline",
    "DeadlineExceeded",
    "Downstream",
    "DownstreamError",
    "DownstreamStats",
    "DownstreamStatusError",
    "DownstreamTimeout",
    "DownstreamUnreachable",
    "KeyStats",
    "KeyedLimits",
    "LimitTimeout",
    "LimitsStats",
    "LoopClock",
    "Outcome",
    "PatternError",
    "ResourceClosed",
    "RetryBudget",
    "RetryBudgetStats",
    "RetryOn",
    "RetryPolicy",
    "Saturated",
    "current_deadline",
    "deadline",
    "fetch_all",
    "move_on_after",
    "or_fallback",
    "retry",
    "stream_all",
    "time_left",
]
