"""Async patterns for production services, usable on their own (no web framework needed).

The Redis-backed parts (``RedisStore``, ``RedisLimits``, ``SharedBreaker``) are imported
on first use: the Redis client costs a process ~0.3 s of start-up, and most users of the
other patterns never touch it.
"""

import importlib
import typing

from loopwise.patterns.breaker import Attempt, BreakerStats, CircuitBreaker, CircuitState
from loopwise.patterns.cancel_safe import CancelSafeTransport
from loopwise.patterns.deadlines import (
    DEADLINE_MARGIN,
    Deadline,
    current_deadline,
    fail_after,
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
    PoolSaturated,
    ResourceClosed,
    Saturated,
)
from loopwise.patterns.fanout import Branch, FanOutResult, fan_out, optional, required
from loopwise.patterns.fetch import Outcome, fetch_all, stream_all
from loopwise.patterns.lifecycle import AsyncResource, ResourceState
from loopwise.patterns.limits import KeyedLimits, KeyStats, Limiter, Limits, LimitsStats
from loopwise.patterns.offload import BlockingPool, CpuPool, PoolStats
from loopwise.patterns.outbound import Downstream, DownstreamStats, Retries
from loopwise.patterns.retries import (
    RetryBudget,
    RetryBudgetStats,
    RetryOn,
    RetryPolicy,
    retry,
)
from loopwise.patterns.watchdog import DEFAULT_LAG_BUCKETS, LagStats, LoopWatchdog

if typing.TYPE_CHECKING:
    from loopwise.patterns.shared_breaker import SharedBreaker
    from loopwise.patterns.shared_limits import RedisLimits
    from loopwise.patterns.shared_store import RedisStore, StoreStats

_ON_FIRST_USE = {
    "SharedBreaker": "loopwise.patterns.shared_breaker",
    "RedisLimits": "loopwise.patterns.shared_limits",
    "RedisStore": "loopwise.patterns.shared_store",
    "StoreStats": "loopwise.patterns.shared_store",
}


def __getattr__(name: str) -> typing.Any:
    module = _ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "DEADLINE_MARGIN",
    "DEFAULT_LAG_BUCKETS",
    "AsyncResource",
    "Attempt",
    "BlockingPool",
    "Branch",
    "BreakerStats",
    "CancelSafeTransport",
    "CircuitBreaker",
    "CircuitOpen",
    "CircuitState",
    "CpuPool",
    "Deadline",
    "DeadlineExceeded",
    "Downstream",
    "DownstreamError",
    "DownstreamStats",
    "DownstreamStatusError",
    "DownstreamTimeout",
    "DownstreamUnreachable",
    "FanOutResult",
    "KeyStats",
    "KeyedLimits",
    "LagStats",
    "LimitTimeout",
    "Limiter",
    "Limits",
    "LimitsStats",
    "LoopWatchdog",
    "Outcome",
    "PatternError",
    "PoolSaturated",
    "PoolStats",
    "RedisLimits",
    "RedisStore",
    "ResourceClosed",
    "ResourceState",
    "Retries",
    "RetryBudget",
    "RetryBudgetStats",
    "RetryOn",
    "RetryPolicy",
    "Saturated",
    "SharedBreaker",
    "StoreStats",
    "current_deadline",
    "fail_after",
    "fan_out",
    "fetch_all",
    "move_on_after",
    "optional",
    "or_fallback",
    "required",
    "retry",
    "stream_all",
    "time_left",
]
