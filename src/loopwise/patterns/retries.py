"""Retries shaped like stamina's: keyword-only, no default for what to retry on, bounded.

    @retry(on=httpx.ConnectError, attempts=3, timeout=2.0)
    async def fetch() -> bytes: ...

    policy = RetryPolicy(on=is_retryable, attempts=3, budget=RetryBudget())
    value = await policy.call(fetch, url)

A retry happens only when every bound allows it: attempts left, the policy's own
``timeout`` not spent, the wait shorter than the deadline in force
(:mod:`loopwise.patterns.deadlines`), and a token in the shared :class:`RetryBudget`.
Otherwise the last error is raised as it was. Waits grow exponentially with *full*
jitter (a uniform draw between 0 and the cap: "Exponential Backoff And Jitter", AWS
Architecture Blog, 2015), so clients that failed together do not retry together. An error
carrying ``retry_after`` (seconds; e.g. from a ``Retry-After`` header) waits at least that
long, or is raised at once when that is longer than the time left.

Time is the running event loop's (``loop.time()``, ``asyncio.sleep``), like every wait in
this package: a test runs the loop on virtual time and never really sleeps.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from loopwise.patterns.deadlines import time_left

__all__ = ["RetryBudget", "RetryBudgetStats", "RetryOn", "RetryPolicy", "retry"]

P = ParamSpec("P")
T = TypeVar("T")

RetryOn = type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool]
"""What to retry on: exception classes, or a predicate that decides per error."""


@dataclass(frozen=True, slots=True)
class RetryBudgetStats:
    calls: int
    retries: int
    denied: int
    balance: float


class RetryBudget:
    """Caps retries at a fraction of calls, shared by every caller of one downstream.

    A token bucket (Google SRE book, "Handling Overload": retry budgets): each call
    deposits ``ratio`` tokens, time deposits ``min_per_second`` so a quiet client can still
    retry, and each retry spends one token. Over any stretch of time retries stay below
    ``ratio * calls + min_per_second * seconds + burst``: when a downstream fails
    everything, retries add 10%, not 3x, to its load.

        budget = RetryBudget(ratio=0.1, min_per_second=1.0)   # ~10% of calls, >= 1 retry/s
    """

    def __init__(
        self,
        *,
        ratio: float = 0.1,
        min_per_second: float = 1.0,
        burst: float = 10.0,
    ) -> None:
        if not 0 <= ratio <= 1:
            raise ValueError(f"`ratio` must be between 0 and 1, got {ratio}")
        if min_per_second < 0 or burst < 1:
            raise ValueError("`min_per_second` must not be negative and `burst` at least 1")
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.burst = burst
        self._balance = burst
        self._updated: float | None = None
        self._calls = self._retries = self._denied = 0

    def record_call(self) -> None:
        """Count one call (its first attempt): it earns ``ratio`` of a retry."""
        self._refill()
        self._calls += 1
        self._balance = min(self.burst, self._balance + self.ratio)

    def try_spend(self) -> bool:
        """Take one retry's token; False when the budget is spent and the caller must not retry."""
        self._refill()
        if self._balance >= 1.0:
            self._balance -= 1.0
            self._retries += 1
            return True
        self._denied += 1
        return False

    def stats(self) -> RetryBudgetStats:
        self._refill()
        return RetryBudgetStats(self._calls, self._retries, self._denied, self._balance)

    def _refill(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._updated is not None:
            earned = (now - self._updated) * self.min_per_second
            self._balance = min(self.burst, self._balance + earned)
        self._updated = now


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How to retry one kind of call. Every bound applies; the first to run out wins.

    Args:
        on: exception classes to retry, or a predicate on the error. No default: say it.
        attempts: total tries, the first included.
        timeout: seconds from the first try after which no retry starts; None for none.
        wait_initial: the backoff cap before the first retry, in seconds.
        wait_max: the largest backoff cap.
        wait_exp_base: the cap grows by this factor per retry.
        wait_jitter: full jitter (on), or exactly the cap (off; for tests and demos).
        budget: the retry budget shared by every caller of the same downstream.
        on_retry: told (retry number, wait, error) before each wait, e.g. to log it.
        random: a source of uniform floats in [0, 1) for the jitter.
    """

    on: RetryOn
    attempts: int = 10
    timeout: float | None = 45.0
    wait_initial: float = 0.1
    wait_max: float = 5.0
    wait_exp_base: float = 2.0
    wait_jitter: bool = True
    budget: RetryBudget | None = None
    on_retry: Callable[[int, float, Exception], None] | None = None
    random: Callable[[], float] = random.random

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"`attempts` must be at least 1, got {self.attempts}")
        if self.timeout is not None and self.timeout < 0:
            raise ValueError(f"`timeout` must not be negative, got {self.timeout}")
        if self.wait_initial < 0 or self.wait_max < self.wait_initial or self.wait_exp_base < 1:
            raise ValueError(
                "backoff needs 0 <= `wait_initial` <= `wait_max`, `wait_exp_base` >= 1"
            )

    def backoff(self, retry_number: int) -> float:
        """The wait before retry number ``retry_number`` (1 for the first retry)."""
        cap = min(self.wait_max, self.wait_initial * self.wait_exp_base ** (retry_number - 1))
        return cap * self.random() if self.wait_jitter else cap

    def retries_on(self, error: Exception) -> bool:
        """Whether ``error`` is one this policy retries (bounds aside)."""
        if isinstance(self.on, type | tuple):
            return isinstance(error, self.on)
        return self.on(error)

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)``, retrying within the bounds; else its last error."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        if self.budget is not None:
            self.budget.record_call()
        for attempt in range(1, self.attempts + 1):
            try:
                return await fn(*args, **kwargs)
            except Exception as error:
                if attempt == self.attempts or not self.retries_on(error):
                    raise
                wait = self._wait(attempt, error, loop.time() - started)
                if wait is None:
                    raise
                if self.on_retry is not None:
                    self.on_retry(attempt, wait, error)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _wait(self, attempt: int, error: Exception, spent: float) -> float | None:
        """The wait before the next try, or None when a bound forbids retrying."""
        wait = self.backoff(attempt)
        asked = getattr(error, "retry_after", None)
        if isinstance(asked, int | float) and asked > wait:
            wait = float(asked)
        if self.timeout is not None and spent + wait > self.timeout:
            return None
        left = time_left()
        if left is not None and wait >= left:
            return None  # the deadline would cut the retry short: fail now, leave time to fall back
        if self.budget is not None and not self.budget.try_spend():
            return None
        return wait


def retry(
    *,
    on: RetryOn,
    attempts: int = 10,
    timeout: float | None = 45.0,
    wait_initial: float = 0.1,
    wait_max: float = 5.0,
    wait_exp_base: float = 2.0,
    wait_jitter: bool = True,
    budget: RetryBudget | None = None,
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Decorate an async function to retry it under a :class:`RetryPolicy` built from these."""
    policy = RetryPolicy(
        on=on,
        attempts=attempts,
        timeout=timeout,
        wait_initial=wait_initial,
        wait_max=wait_max,
        wait_exp_base=wait_exp_base,
        wait_jitter=wait_jitter,
        budget=budget,
    )

    def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(fn)
        async def retrying(*args: P.args, **kwargs: P.kwargs) -> T:
            return await policy.call(fn, *args, **kwargs)

        return retrying

    return decorate
