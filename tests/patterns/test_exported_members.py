"""The public surface of ``loopwise.patterns`` is exactly what ``__all__`` lists."""

from __future__ import annotations

import loopwise.patterns
from loopwise.patterns import breaker, clock, fetch, limits, outbound, retries


def test_package_exports_are_pinned() -> None:
    """Every public name is exported on purpose; adding one means changing this list."""
    assert sorted(loopwise.patterns.__all__) == sorted(
        [
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
    )


def test_module_exports_exist_and_are_reexported() -> None:
    """Each module's ``__all__`` names real objects, all reachable from the package."""
    for module in (breaker, clock, fetch, limits, outbound, retries):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
    reexported = {n for m in (breaker, clock, fetch, limits, retries) for n in m.__all__}
    assert reexported <= set(loopwise.patterns.__all__)


def test_every_error_is_a_pattern_error() -> None:
    """One ``except PatternError`` catches everything the package raises on purpose."""
    errors = [getattr(loopwise.patterns, n) for n in loopwise.patterns.__all__]
    raised = [e for e in errors if isinstance(e, type) and issubclass(e, Exception)]
    assert len(raised) == 10
    assert all(issubclass(e, loopwise.patterns.PatternError) for e in raised)
