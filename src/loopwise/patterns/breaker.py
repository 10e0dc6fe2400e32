"""A circuit breaker per downstream: stop calling what is failing, probe, recover.

    breaker = CircuitBreaker("loyalty", failure_ratio=0.5, min_calls=20, cool_down=5.0)
    with breaker.attempt() as attempt:      # raises CircuitOpen while open
        response = await send()
        if response.status_code >= 500:
            attempt.fail()                  # an answer can be a failure without raising

Closed: calls pass and their outcomes fill a rolling window (``window`` seconds, in
``buckets`` slices). Once the window holds ``min_calls`` calls and the share of failures
reaches ``failure_ratio``, the breaker opens. Open: every call fails fast with
:class:`CircuitOpen` for ``cool_down`` seconds. Half-open: up to ``probes`` calls go
through; the first success closes the breaker (with an empty window), the first failure
opens it again for another cool-down.

A block that raises counts as a failure; one that is cancelled counts as nothing (the
caller gave up, the downstream did not fail). ``on_state_change(name, old, new)`` hears
every transition: the service logs it and exports it as a metric. Per process, like the
limits: each instance judges the downstream by its own calls
(:class:`~loopwise.patterns.shared_breaker.SharedBreaker` shares the state through Redis).
"""

from __future__ import annotations

import asyncio
import enum
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

from loopwise.patterns.exceptions import CircuitOpen

__all__ = ["Attempt", "BreakerStats", "CircuitBreaker", "CircuitState"]


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """A snapshot: the state, the window's counts, and totals since start."""

    name: str
    state: CircuitState
    window_calls: int
    window_failures: int
    times_opened: int
    rejected: int


class Attempt:
    """One call's verdict; unset means "success if no exception, failure if one"."""

    __slots__ = ("skipped", "verdict")

    def __init__(self) -> None:
        self.verdict: bool | None = None
        self.skipped = False

    def fail(self) -> None:
        self.verdict = False

    def succeed(self) -> None:
        self.verdict = True

    def skip(self) -> None:
        """The call never reached the downstream (e.g. our own limit refused): no verdict."""
        self.skipped = True


class CircuitBreaker:
    """Opens on a failure ratio over a rolling window; fails fast; half-opens to probe.

    Args:
        name: names the breaker in errors, stats and state-change reports.
        failure_ratio: share of failed calls in the window that opens the breaker.
        min_calls: calls the window must hold before the ratio counts.
        window: seconds of history the ratio is taken over.
        buckets: slices of the window (memory is per slice, not per call).
        cool_down: seconds the breaker stays open before probing.
        probes: calls let through at once while half-open.
        on_state_change: called with (name, old, new) on every transition.

    Time is the running event loop's clock, so the breaker is used from inside the loop.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_ratio: float = 0.5,
        min_calls: int = 20,
        window: float = 10.0,
        buckets: int = 10,
        cool_down: float = 5.0,
        probes: int = 1,
        on_state_change: Callable[[str, CircuitState, CircuitState], None] | None = None,
    ) -> None:
        if not 0 < failure_ratio <= 1:
            raise ValueError(f"`failure_ratio` must be in (0, 1], got {failure_ratio}")
        if min_calls < 1 or buckets < 1 or probes < 1:
            raise ValueError("`min_calls`, `buckets` and `probes` must be at least 1")
        if window <= 0 or cool_down < 0:
            raise ValueError("`window` must be positive and `cool_down` not negative")
        self.name = name
        self.failure_ratio = failure_ratio
        self.min_calls = min_calls
        self.window = window
        self.cool_down = cool_down
        self.probes = probes
        self._width = window / buckets
        self._on_state_change = on_state_change
        self._state = CircuitState.CLOSED
        # (slice number, successes, failures), oldest first; only slices inside the window.
        self._slices: deque[list[int]] = deque()
        self._opened_at = -math.inf
        self._probing = 0
        # Bumped on every transition: a verdict from an older generation changes nothing.
        self._generation = 0
        self._times_opened = 0
        self._rejected = 0

    @property
    def state(self) -> CircuitState:
        return self._state

    @contextmanager
    def attempt(self) -> Iterator[Attempt]:
        """Admit one call and record its outcome.

        Raises:
            CircuitOpen: while open, or half-open with every probe slot taken.
        """
        generation, probing = self._admit()
        attempt = Attempt()
        try:
            yield attempt
        except Exception:
            self._settle(generation, probing, None if attempt.skipped else attempt.verdict is True)
            raise
        except BaseException:
            # Cancelled: no verdict on the downstream, unless the caller gave one.
            self._settle(generation, probing, None if attempt.skipped else attempt.verdict)
            raise
        self._settle(generation, probing, None if attempt.skipped else attempt.verdict is not False)

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[Attempt]:
        """:meth:`attempt` for async callers; a breaker whose state is shared reads it here."""
        with self.attempt() as attempt:
            yield attempt

    def stats(self) -> BreakerStats:
        self._evict(_now())
        return BreakerStats(
            name=self.name,
            state=self._state,
            window_calls=sum(s[1] + s[2] for s in self._slices),
            window_failures=sum(s[2] for s in self._slices),
            times_opened=self._times_opened,
            rejected=self._rejected,
        )

    def _admit(self) -> tuple[int, bool]:
        now = _now()
        if self._state is CircuitState.OPEN:
            reopens_at = self._opened_at + self.cool_down
            if now < reopens_at:
                self._rejected += 1
                raise CircuitOpen(self.name, retry_after=reopens_at - now)
            self._move(CircuitState.HALF_OPEN)
        if self._state is CircuitState.HALF_OPEN:
            if self._probing >= self.probes:
                self._rejected += 1
                raise CircuitOpen(self.name, retry_after=0.0)
            self._probing += 1
            return self._generation, True
        return self._generation, False

    def _settle(self, generation: int, probing: bool, ok: bool | None) -> None:
        if probing and generation == self._generation:
            self._probing -= 1
        if ok is None or generation != self._generation:
            return
        if self._state is CircuitState.HALF_OPEN:
            self._slices.clear()
            self._move(CircuitState.CLOSED if ok else CircuitState.OPEN)
            return
        now = _now()
        self._count(now, ok)
        calls = sum(s[1] + s[2] for s in self._slices)
        failures = sum(s[2] for s in self._slices)
        if not ok and calls >= self.min_calls and failures >= self.failure_ratio * calls:
            self._move(CircuitState.OPEN)

    def _count(self, now: float, ok: bool) -> None:
        self._evict(now)
        number = int(now // self._width)
        if not self._slices or self._slices[-1][0] != number:
            self._slices.append([number, 0, 0])
        self._slices[-1][1 if ok else 2] += 1

    def _evict(self, now: float) -> None:
        oldest = int(now // self._width) - round(self.window / self._width) + 1
        while self._slices and self._slices[0][0] < oldest:
            self._slices.popleft()

    def _move(self, new: CircuitState) -> None:
        old, self._state = self._state, new
        self._generation += 1
        self._probing = 0
        if new is CircuitState.OPEN:
            self._opened_at = _now()
            self._times_opened += 1
        if self._on_state_change is not None:
            self._on_state_change(self.name, old, new)


def _now() -> float:
    return asyncio.get_running_loop().time()
