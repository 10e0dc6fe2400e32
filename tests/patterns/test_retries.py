"""Retries: bounded by attempts, time, the deadline and the budget; full jitter; Retry-After.

Every test runs on virtual time: backoff is slept on the loop's clock, which jumps.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from loopwise.patterns import RetryBudget, RetryPolicy, fail_after, retry

pytestmark = pytest.mark.virtual_time


class Sleeps(list[float]):
    """Records each backoff a policy announces; pass ``on_retry=sleeps.hear``."""

    def hear(self, _retry: int, wait: float, _error: Exception) -> None:
        self.append(wait)


def _policy(sleeps: Sleeps, **kwargs: Any) -> RetryPolicy:
    return RetryPolicy(on_retry=sleeps.hear, **kwargs)


class Flaky:
    """Fails ``failures`` times with ``error``, then answers ``"ok"``."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or ConnectionError("refused")
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


class Throttled(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__("429")
        self.retry_after = retry_after


async def test_retries_until_success() -> None:
    """A retryable failure is retried and the eventual answer returned."""
    sleeps = Sleeps()
    flaky = Flaky(failures=2)
    policy = _policy(sleeps, on=ConnectionError, attempts=5)
    assert await policy.call(flaky) == "ok"
    assert flaky.calls == 3
    assert len(sleeps) == 2


async def test_attempts_bound_the_retries() -> None:
    """After `attempts` tries the last error is raised as it was."""
    sleeps = Sleeps()
    flaky = Flaky(failures=100)
    with pytest.raises(ConnectionError, match="refused"):
        await _policy(sleeps, on=ConnectionError, attempts=4).call(flaky)
    assert flaky.calls == 4
    assert len(sleeps) == 3


async def test_other_errors_are_not_retried() -> None:
    """Only the errors named by `on` are retried."""
    flaky = Flaky(failures=1, error=ValueError("bad"))
    with pytest.raises(ValueError, match="bad"):
        await RetryPolicy(on=ConnectionError).call(flaky)
    assert flaky.calls == 1


async def test_predicate_decides() -> None:
    """A predicate given as `on` decides per error."""
    flaky = Flaky(failures=1, error=OSError(111, "refused"))
    policy = RetryPolicy(on=lambda e: isinstance(e, OSError) and e.errno == 111)
    assert await policy.call(flaky) == "ok"


async def test_backoff_is_exponential_with_full_jitter() -> None:
    """Each wait is drawn uniformly below a cap that doubles up to `wait_max`."""
    sleeps = Sleeps()
    policy = _policy(
        sleeps, on=ConnectionError, attempts=9, timeout=None, wait_initial=0.1, wait_max=1.0
    )
    with pytest.raises(ConnectionError):
        await policy.call(Flaky(failures=100))
    caps = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert len(sleeps) == len(caps)
    assert all(0 <= wait <= cap for wait, cap in zip(sleeps, caps, strict=True))
    assert len(set(sleeps)) == len(caps)  # jittered: no two waits alike


async def test_jitter_spreads_waits_over_the_whole_range() -> None:
    """Full jitter: over many draws the waits cover [0, cap), with a mean near cap / 2."""
    policy = RetryPolicy(on=ConnectionError, wait_initial=1.0, wait_max=1.0)
    draws = [policy.backoff(1) for _ in range(2000)]
    assert min(draws) < 0.05
    assert max(draws) > 0.95
    assert 0.45 < sum(draws) / len(draws) < 0.55


async def test_jitter_off_waits_exactly_the_cap() -> None:
    """With jitter off the waits are the caps themselves (for demos and tests)."""
    sleeps = Sleeps()
    policy = _policy(sleeps, on=ConnectionError, attempts=4, wait_jitter=False)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ConnectionError):
        await policy.call(Flaky(failures=100))
    assert sleeps == pytest.approx([0.1, 0.2, 0.4])
    assert loop.time() - started == pytest.approx(0.7, abs=1e-9)  # slept, on virtual time


async def test_timeout_bounds_the_retries() -> None:
    """No retry starts once it would end past the policy's `timeout`."""
    sleeps = Sleeps()
    policy = _policy(sleeps, on=ConnectionError, attempts=100, timeout=1.0, wait_jitter=False)
    with pytest.raises(ConnectionError):
        await policy.call(Flaky(failures=1000))
    assert sum(sleeps) <= 1.0
    assert sleeps == pytest.approx([0.1, 0.2, 0.4])  # the next (0.8) would pass 1.0 s


async def test_deadline_bounds_the_retries() -> None:
    """A wait that would outlast the deadline in force is not started: the error comes now."""
    sleeps = Sleeps()
    flaky = Flaky(failures=100)
    policy = _policy(sleeps, on=ConnectionError, wait_initial=1.0, wait_jitter=False)
    async with fail_after(0.5):
        with pytest.raises(ConnectionError):
            await policy.call(flaky)
    assert flaky.calls == 1
    assert sleeps == []


async def test_retry_after_is_honoured() -> None:
    """An error carrying `retry_after` waits at least that long."""
    sleeps = Sleeps()
    flaky = Flaky(failures=1, error=Throttled(retry_after=2.0))
    policy = _policy(sleeps, on=Throttled, wait_initial=0.1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await policy.call(flaky) == "ok"
    assert sleeps == [2.0]
    assert loop.time() - started == 2.0


async def test_retry_after_past_the_deadline_fails_now() -> None:
    """When the downstream asks for more time than is left, the error is raised at once."""
    sleeps = Sleeps()
    flaky = Flaky(failures=1, error=Throttled(retry_after=5.0))
    async with fail_after(1.0):
        with pytest.raises(Throttled):
            await _policy(sleeps, on=Throttled).call(flaky)
    assert sleeps == []


async def test_budget_caps_retries_at_a_fraction_of_calls() -> None:
    """With a dead downstream, retries stay near 10% of calls, not attempts-1 per call."""
    sleeps = Sleeps()
    budget = RetryBudget(ratio=0.1, min_per_second=0.0, burst=5)
    policy = _policy(sleeps, on=ConnectionError, attempts=3, budget=budget)
    calls = 1000
    for _ in range(calls):
        with pytest.raises(ConnectionError):
            await policy.call(Flaky(failures=100))
    stats = budget.stats()
    assert stats.calls == calls
    assert stats.retries <= 0.1 * calls + 5
    assert stats.retries >= 0.1 * calls - 1
    assert stats.denied > 0


async def test_budget_refills_with_time_at_the_minimum_rate() -> None:
    """A quiet client still gets `min_per_second` retries as time passes."""
    budget = RetryBudget(ratio=0.0, min_per_second=2.0, burst=1)
    assert budget.try_spend()
    assert not budget.try_spend()
    await asyncio.sleep(0.5)
    assert budget.try_spend()
    assert not budget.try_spend()


async def test_decorator_keeps_the_function() -> None:
    """`@retry` retries the decorated function and keeps its name."""
    flaky = Flaky(failures=2)

    @retry(on=ConnectionError, attempts=3)
    async def fetch() -> str:
        return await flaky()

    assert await fetch() == "ok"
    assert fetch.__name__ == "fetch"


async def test_on_retry_hears_each_retry() -> None:
    """`on_retry` is told the retry number, the wait and the error before each wait."""
    heard: list[tuple[int, float, str]] = []
    policy = RetryPolicy(
        on=ConnectionError,
        wait_jitter=False,
        on_retry=lambda n, wait, error: heard.append((n, wait, str(error))),
    )
    await policy.call(Flaky(failures=2))
    assert [(n, round(wait, 6), error) for n, wait, error in heard] == [
        (1, 0.1, "refused"),
        (2, 0.2, "refused"),
    ]


def test_bad_policy_is_refused() -> None:
    """Nonsense bounds are refused with a message naming the parameter."""
    with pytest.raises(ValueError, match="`attempts` must be at least 1"):
        RetryPolicy(on=ConnectionError, attempts=0)
    with pytest.raises(ValueError, match="`ratio` must be between 0 and 1"):
        RetryBudget(ratio=2.0)
