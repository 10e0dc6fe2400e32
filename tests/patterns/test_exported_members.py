"""The public surface of ``loopwise.patterns`` is exactly what ``__all__`` lists."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import loopwise.patterns
from loopwise.patterns import outbound

# Every module of the package, found rather than listed: a new one is checked too.
_MODULES = tuple(
    importlib.import_module(f"loopwise.patterns.{info.name}")
    for info in pkgutil.iter_modules(loopwise.patterns.__path__)
    if not info.name.startswith("_")
)


def test_nothing_public_is_unlisted() -> None:
    """Every public, non-module name in the package is in ``__all__``."""
    for name in loopwise.patterns.__all__:  # loads the parts imported on first use
        getattr(loopwise.patterns, name)
    public = {
        name
        for name, value in vars(loopwise.patterns).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(loopwise.patterns.__all__)


def test_package_exports_are_pinned() -> None:
    """Every public name is exported on purpose; adding one means changing this list."""
    assert sorted(loopwise.patterns.__all__) == sorted(
        [
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
    )


def test_module_exports_exist_and_are_reexported() -> None:
    """Each module's ``__all__`` names real objects, all reachable from the package."""
    for module in _MODULES:
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
    # outbound's IDEMPOTENT_METHODS and RETRYABLE_STATUSES stay in their module on purpose.
    reexported = {n for m in _MODULES if m is not outbound for n in m.__all__}
    assert reexported <= set(loopwise.patterns.__all__)


def test_every_error_is_a_pattern_error() -> None:
    """One ``except PatternError`` catches everything the package raises on purpose."""
    errors = [getattr(loopwise.patterns, n) for n in loopwise.patterns.__all__]
    raised = [e for e in errors if isinstance(e, type) and issubclass(e, Exception)]
    assert len(raised) == 11  # the tree in exceptions.py, root included
    assert all(issubclass(e, loopwise.patterns.PatternError) for e in raised)


def test_importing_the_patterns_leaves_redis_alone() -> None:
    """The Redis client loads with the first Redis-backed part, not with the package."""
    probe = (
        "import sys, loopwise.patterns as p; before = 'redis' in sys.modules; p.RedisLimits; "
        "print(before, 'redis' in sys.modules)"
    )
    ran = subprocess.run(  # noqa: S603  # this interpreter, a fixed probe
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert ran.stdout.split() == ["False", "True"]
