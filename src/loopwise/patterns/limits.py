"""Concurrency and rate limits per key (a host, a downstream), with bounded waiting.

    limits = KeyedLimits("shipments", concurrency=10, rate=50.0, burst=5)
    async with limits.acquire("shipments.internal:443"):   # at most 10 at once, 50/s
        ...

    Limits(concurrency=10, rate=50.0, burst=5)   # the same bounds as a value, for Downstream

A caller first waits for a concurrency slot (first come, first served), then for a rate
token (GCRA: a token bucket kept as one timestamp per key; waiting callers get tokens in
order, one interval apart, even after the loop stalled). Waiting is bounded by the
caller's deadline (:mod:`loopwise.patterns.deadlines`) and by ``max_wait``; when no slot can
come in time the call fails fast with :class:`LimitTimeout` instead of queueing forever.
Waiting gives up ``margin`` seconds before the deadline
(:data:`~loopwise.patterns.deadlines.DEADLINE_MARGIN` by default), so the caller still has
time to take its fallback (and a slot with no time left to use it is worthless anyway).

**These limits are per process.** Each worker process, and each instance behind a load
balancer, has its own; N instances with ``concurrency=10`` may send 10 * N concurrent calls.
A limit that must hold across instances needs a shared store:
:class:`~loopwise.patterns.shared_limits.RedisLimits` offers :class:`Limiter`'s two methods
with its state in Redis.

Per-key state is forgotten once a key has been idle for ``forget_idle_after`` seconds (with
a full rate bucket, so forgetting changes no decision); an unbounded set of keys cannot leak
memory. Per-key counters go with it; the totals in :class:`LimitsStats` keep counting.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal, NoReturn, Protocol

from loopwise.patterns._slots import Slots, wait_until
from loopwise.patterns.deadlines import DEADLINE_MARGIN
from loopwise.patterns.exceptions import LimitTimeout

__all__ = ["KeyStats", "KeyedLimits", "Limiter", "Limits", "LimitsStats"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The bounds for each key (host) of a limiter, as a value (httpx's ``Limits`` shape).

        Limits(concurrency=10)                   # 10 calls at once per host, no rate limit
        Limits(concurrency=10, rate=100.0)       # and at most 100 starts per second
        Limits(concurrency=None, rate=5.0, burst=5, max_wait=1.0)

    Args:
        concurrency: calls in progress at once per key; None for no limit.
        rate: calls started per second per key; None for no limit.
        burst: calls that may start back to back before ``rate`` spaces them out.
        max_wait: longest wait for a slot in seconds, deadline or not; None for no cap.
    """

    concurrency: int | None = 10
    rate: float | None = None
    burst: int = 1
    max_wait: float | None = None

    def __post_init__(self) -> None:
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"`concurrency` must be at least 1 or None, got {self.concurrency}")
        if self.rate is not None and not self.rate > 0:
            raise ValueError(f"`rate` must be positive or None, got {self.rate}")
        if self.burst < 1:
            raise ValueError(f"`burst` must be at least 1, got {self.burst}")
        if self.max_wait is not None and self.max_wait < 0:
            raise ValueError(f"`max_wait` must not be negative, got {self.max_wait}")


@dataclass(frozen=True, slots=True)
class KeyStats:
    """One key's saturation at the moment of the snapshot."""

    in_use: int
    waiting: int
    admitted: int
    rejected: int


@dataclass(frozen=True, slots=True)
class LimitsStats:
    """A snapshot of every tracked key, and totals that survive forgotten keys.

    ``shared_in_use`` is None for per-process limits; for shared ones it is the slots every
    process holds, as the store last said. ``fallback`` is True while shared limits run on
    this process's share instead; ``fallback_calls`` counts the calls admitted so.
    """

    name: str
    concurrency: int | None
    rate: float | None
    admitted: int
    rejected: int
    keys: dict[str, KeyStats]
    shared_in_use: int | None = None
    fallback: bool = False
    fallback_calls: int = 0


class Limiter(Protocol):
    """What a caller of limits needs: this process's :class:`KeyedLimits`, or a shared one."""

    def acquire(self, key: str) -> AbstractAsyncContextManager[None]:
        """Hold one slot for ``key`` for the block; :class:`LimitTimeout` if none in time."""
        ...

    def stats(self) -> LimitsStats:
        """A snapshot of the saturation of every key tracked now."""
        ...


@dataclass(slots=True)
class _Key:
    # The concurrency slots, handed first come first served (see _slots).
    slots: Slots
    # Callers waiting for a rate token, oldest first. Tokens are handed out one at a time by
    # a pacer timer, each from the time it is actually handed out: after a stall of the
    # loop, late callers go one interval apart instead of all at once (no catch-up burst
    # beyond `burst`), so the rate holds as the downstream sees it.
    rate_queue: deque[asyncio.Future[bool]] = field(default_factory=deque)
    pacer: asyncio.TimerHandle | None = None
    # GCRA's theoretical arrival time: the bucket is full whenever tat <= now.
    tat: float = -math.inf
    last_used: float = -math.inf
    admitted: int = 0
    rejected: int = 0

    def idle(self, now: float, forget_after: float) -> bool:
        return (
            self.slots.in_use == 0
            and not self.slots.waiting
            and not self.rate_queue
            and self.tat <= now
            and now - self.last_used >= forget_after
        )


class KeyedLimits:
    """A concurrency limit and a rate limit per key, composed, per process (a :class:`Limiter`).

    Args:
        name: names the limits in errors and stats.
        concurrency: calls in progress at once per key; None for no limit.
        rate: calls started per second per key; None for no limit.
        burst: calls that may start back to back before ``rate`` spaces them out.
        max_wait: longest wait for a slot in seconds, deadline or not; None for no cap.
        margin: waiting ends this many seconds before the caller's deadline.
        forget_idle_after: seconds after which an idle key's state is dropped.
    """

    def __init__(
        self,
        name: str = "limits",
        *,
        concurrency: int | None = 10,
        rate: float | None = None,
        burst: int = 1,
        max_wait: float | None = None,
        margin: float = DEADLINE_MARGIN,
        forget_idle_after: float = 60.0,
    ) -> None:
        bounds = Limits(concurrency=concurrency, rate=rate, burst=burst, max_wait=max_wait)
        if margin < 0 or forget_idle_after <= 0:
            raise ValueError("`margin` must not be negative; `forget_idle_after` positive")
        self.name = name
        self.concurrency = bounds.concurrency
        self.rate = bounds.rate
        self.burst = bounds.burst
        self.max_wait = bounds.max_wait
        self.margin = margin
        self.forget_idle_after = forget_idle_after
        self._interval = 0.0 if rate is None else 1.0 / rate
        self._keys: dict[str, _Key] = {}
        self._admitted = 0
        self._rejected = 0
        self._last_sweep = -math.inf

    @classmethod
    def of(cls, name: str, limits: Limits) -> KeyedLimits:
        """Per-process limits named ``name`` with the bounds ``limits``."""
        return cls(
            name,
            concurrency=limits.concurrency,
            rate=limits.rate,
            burst=limits.burst,
            max_wait=limits.max_wait,
        )

    @asynccontextmanager
    async def acquire(self, key: str) -> AsyncIterator[None]:
        """Hold one slot for ``key`` for the duration of the block.

        Raises:
            LimitTimeout: no slot or rate token within the deadline or ``max_wait``.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._sweep(now)
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _Key(Slots(self.concurrency))
        state.last_used = now
        until = wait_until(self.max_wait, margin=self.margin)
        if not await state.slots.take(until):
            self._reject(key, state, "concurrency", loop.time() - now)
        try:
            await self._take_token(loop, key, state, now, until)
            state.admitted += 1
            self._admitted += 1
            yield
        finally:
            self._release(state, loop.time())

    def stats(self) -> LimitsStats:
        """A snapshot of the saturation of every key tracked now."""
        keys = {
            key: KeyStats(
                in_use=state.slots.in_use,
                waiting=state.slots.waiting + sum(not f.done() for f in state.rate_queue),
                admitted=state.admitted,
                rejected=state.rejected,
            )
            for key, state in self._keys.items()
        }
        return LimitsStats(
            name=self.name,
            concurrency=self.concurrency,
            rate=self.rate,
            admitted=self._admitted,
            rejected=self._rejected,
            keys=keys,
        )

    async def _take_token(
        self,
        loop: asyncio.AbstractEventLoop,
        key: str,
        state: _Key,
        start: float,
        until: float | None,
    ) -> None:
        if self.rate is None:
            return
        now = loop.time()
        tolerance = self._interval * (self.burst - 1)
        live = sum(not f.done() for f in state.rate_queue)
        if live == 0 and now >= state.tat - tolerance:
            state.tat = max(state.tat, now) + self._interval
            return
        # GCRA knows the wait in advance: refuse now rather than wait and then refuse.
        expected = max(now, state.tat - tolerance) + live * self._interval
        if until is not None and expected > until:
            self._reject(key, state, "rate", now - start)
        waiter: asyncio.Future[bool] = loop.create_future()
        state.rate_queue.append(waiter)
        if state.pacer is None:
            state.pacer = loop.call_at(max(now, state.tat - tolerance), self._pace, loop, state)
        timer = None if until is None else loop.call_at(until, _expire, waiter)
        try:
            granted = await waiter
        finally:
            if timer is not None:
                timer.cancel()
        if not granted:
            self._reject(key, state, "rate", loop.time() - start)

    def _pace(self, loop: asyncio.AbstractEventLoop, state: _Key) -> None:
        """Hand the next rate token to the oldest live waiter, then schedule the next."""
        state.pacer = None
        now = loop.time()
        tolerance = self._interval * (self.burst - 1)
        # A timer always fires a little late; counting from `now` would lose that lateness
        # on every token (measured: 85/s for 100/s). Counting from the schedule, but never
        # from more than one interval back, keeps the rate and bounds the catch-up after a
        # real stall to one token (plus `burst`).
        floor = now - self._interval
        while state.rate_queue and now >= state.tat - tolerance:
            waiter = state.rate_queue.popleft()
            if not waiter.done():  # skip callers that gave up or were cancelled
                waiter.set_result(True)
                state.tat = max(state.tat, floor) + self._interval
        while state.rate_queue and state.rate_queue[0].done():
            state.rate_queue.popleft()
        if state.rate_queue:
            state.pacer = loop.call_at(state.tat - tolerance, self._pace, loop, state)

    def _reject(
        self, key: str, state: _Key, limit: Literal["concurrency", "rate"], waited: float
    ) -> NoReturn:
        state.rejected += 1
        self._rejected += 1
        raise LimitTimeout(self.name, key=key, limit=limit, waited=waited)

    def _release(self, state: _Key, now: float) -> None:
        state.last_used = now
        state.slots.release()

    def _sweep(self, now: float) -> None:
        # Amortised: one pass over the keys at most every `forget_idle_after` seconds.
        if now - self._last_sweep < self.forget_idle_after:
            return
        self._last_sweep = now
        for key in [k for k, s in self._keys.items() if s.idle(now, self.forget_idle_after)]:
            del self._keys[key]


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)
