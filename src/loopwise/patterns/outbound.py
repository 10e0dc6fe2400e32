"""Resilient HTTP to one downstream: a shared client, limits, deadlines, retries, a breaker.

    async with Downstream("loyalty", "http://loyalty.internal", timeout=0.5, concurrency=10,
                          rate=100.0) as loyalty:
        async with deadline(0.3):                        # the request's budget
            response = await loyalty.get("/loyalty/42")  # httpx timeout <= time left

One ``httpx.AsyncClient`` per downstream, opened once and shared by every call, so
connections are reused (never a client per call). Each attempt:

1. asks the :class:`~loopwise.patterns.breaker.CircuitBreaker` (fails fast while open);
2. waits for a slot of the per-host :class:`~loopwise.patterns.limits.KeyedLimits`, no
   longer than the deadline allows;
3. sends with an httpx timeout of ``min(timeout, time_left())``, the whole exchange bounded
   by the same (httpx's timeouts are per read, a trickling body would outlast them).

Retries apply only to idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE) and only to
failures where retrying helps: connect errors, 502/503/504, and 429 after its
``Retry-After``. Not to read timeouts: the downstream may be overloaded, or have done the
work. A shared :class:`~loopwise.patterns.retries.RetryBudget` keeps retries near 10% of calls.

Answers below 500 are returned (a 404 is an answer); 5xx and 429 raise
:class:`DownstreamStatusError` once retries are over. The breaker counts transport errors,
timeouts and 5xx as failures; 429 is back-pressure, not a fault.

Cancelling a call (a deadline, a fan-out that stopped early) must not poison the pool
(httpx issue 1461); ``tests/patterns/test_outbound_server.py`` proves it against a server.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

import httpx

from loopwise.patterns.breaker import Attempt, BreakerStats, CircuitBreaker
from loopwise.patterns.cancel_safe import CancelSafeTransport
from loopwise.patterns.clock import Clock, LoopClock
from loopwise.patterns.deadlines import time_left
from loopwise.patterns.exceptions import (
    ClosedResource,
    DeadlineExceeded,
    DownstreamStatusError,
    DownstreamTimeout,
    DownstreamUnreachable,
    LimitTimeout,
)
from loopwise.patterns.lifecycle import AsyncResource, ResourceState
from loopwise.patterns.limits import KeyedLimits, LimitsStats
from loopwise.patterns.retries import RetryBudget, RetryBudgetStats, RetryPolicy

__all__ = ["IDEMPOTENT_METHODS", "RETRYABLE_STATUSES", "Downstream", "DownstreamStats"]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class DownstreamStats:
    """Everything observable about one downstream, as plain snapshots."""

    name: str
    limits: LimitsStats
    breaker: BreakerStats
    retry_budget: RetryBudgetStats


class Downstream(AsyncResource):
    """One downstream service: its client, limits, retries and breaker. Open it once.

    Args:
        name: names the downstream in errors, logs and stats.
        base_url: prefix for relative request URLs.
        timeout: seconds one attempt may take at most; the deadline may allow less.
        concurrency: calls in progress at once per host.
        rate: calls started per second per host; None for no rate limit.
        burst: calls that may start back to back before ``rate`` spaces them.
        max_wait: the longest wait for a limit slot; the deadline bounds it anyway.
        max_connections: the connection pool's size; keep it >= ``concurrency``.
        max_keepalive_connections: idle connections kept open for reuse.
        keepalive_expiry: seconds an idle connection is kept.
        attempts: tries per idempotent call, the first included.
        retry_wait_initial: backoff cap before the first retry (full jitter below it).
        retry_wait_max: the largest backoff cap.
        retry_budget: shared budget for retries; a new one (10%, >= 1/s) by default.
        breaker: the circuit breaker; a default one named ``name`` when None.
        headers: sent with every request.
        transport: an httpx transport, e.g. ``httpx.MockTransport`` in tests.
        clock: the time source for backoff sleeps; a fake one in tests.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        timeout: float = 2.0,
        concurrency: int = 10,
        rate: float | None = None,
        burst: int = 1,
        max_wait: float | None = None,
        max_connections: int | None = None,
        max_keepalive_connections: int | None = None,
        keepalive_expiry: float = 5.0,
        attempts: int = 3,
        retry_wait_initial: float = 0.05,
        retry_wait_max: float = 1.0,
        retry_budget: RetryBudget | None = None,
        breaker: CircuitBreaker | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"`timeout` must be positive, got {timeout}")
        self.name = name
        self.base_url = base_url
        self.timeout = timeout
        self.limits = KeyedLimits(
            name, concurrency=concurrency, rate=rate, burst=burst, max_wait=max_wait
        )
        self.breaker = breaker or CircuitBreaker(name)
        self.retry_budget = retry_budget or RetryBudget(clock=clock)
        self._retries = RetryPolicy(
            on=_retryable,
            attempts=attempts,
            timeout=None,  # the deadline in force bounds retries; this has none of its own
            wait_initial=retry_wait_initial,
            wait_max=retry_wait_max,
            budget=self.retry_budget,
            clock=clock or LoopClock(),
        )
        self._limits = httpx.Limits(
            max_connections=max_connections or concurrency,
            max_keepalive_connections=max_keepalive_connections or concurrency,
            keepalive_expiry=keepalive_expiry,
        )
        self._transport = transport
        self._client_args: dict[str, Any] = {
            "base_url": base_url,
            "headers": dict(headers or {}),
            "timeout": httpx.Timeout(timeout),
            "follow_redirects": False,  # a redirect from a downstream is an answer, not a hop
        }
        self._client: httpx.AsyncClient | None = None
        self._state = ResourceState.UNOPENED

    async def __aenter__(self) -> Self:
        if self._state is not ResourceState.UNOPENED:
            raise ClosedResource(
                self.name, f"Cannot reopen downstream {self.name!r} once opened or closed."
            )
        transport = self._transport or CancelSafeTransport(limits=self._limits)
        self._client = httpx.AsyncClient(transport=transport, **self._client_args)
        self._state = ResourceState.OPENED
        return self

    async def aclose(self) -> None:
        """Close the client and its connections. Idempotent; the downstream stays closed."""
        client, self._client, self._state = self._client, None, ResourceState.CLOSED
        if client is not None:
            await client.aclose()

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: httpx.QueryParams | Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """Send one request within the deadline in force; retried only if idempotent.

        Args:
            idempotent: overrides the method's default (e.g. a POST with an idempotency key).

        Raises:
            DeadlineExceeded: the deadline in force ran out.
            CircuitOpen: the breaker is open.
            LimitTimeout: no limit slot in time.
            DownstreamStatusError: 5xx or 429, after retries.
            DownstreamTimeout: the attempt's own ``timeout`` ran out (deadline still open).
            DownstreamUnreachable: connect or transport failure, after retries.
            ClosedResource: used before ``async with`` or after closing.
        """
        if self._state is not ResourceState.OPENED or self._client is None:
            raise ClosedResource(
                self.name, f"downstream {self.name!r} is {self._state.name.lower()}"
            )
        request = self._client.build_request(
            method, url, params=params, headers=headers, json=json, content=content
        )
        retryable = request.method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        if not retryable:
            return await self._attempt(self._client, request)
        return await self._retries.call(self._attempt, self._client, request)

    def stats(self) -> DownstreamStats:
        return DownstreamStats(
            self.name, self.limits.stats(), self.breaker.stats(), self.retry_budget.stats()
        )

    async def _attempt(self, client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
        with self.breaker.attempt() as verdict:
            try:
                async with self.limits.acquire(_host_key(request.url)):
                    response = await self._send(client, request, verdict)
            except LimitTimeout:
                verdict.skip()  # our own limit refused: says nothing about the downstream
                raise
            if response.status_code == 429:
                verdict.succeed()  # back-pressure, not a fault: the breaker stays out of it
            if response.status_code == 429 or response.status_code >= 500:
                raise DownstreamStatusError(
                    self.name,
                    status=response.status_code,
                    retry_after=_retry_after(response.headers.get("retry-after")),
                )
            return response

    async def _send(
        self, client: httpx.AsyncClient, request: httpx.Request, verdict: Attempt
    ) -> httpx.Response:
        left = time_left()
        by_deadline = left is not None and left <= self.timeout
        budget = left if left is not None and by_deadline else self.timeout
        if budget <= 0:
            verdict.skip()
            raise DeadlineExceeded(f"{self.name}: no time left for the call")
        request.extensions["timeout"] = httpx.Timeout(budget).as_dict()
        try:
            async with asyncio.timeout(budget):
                return await client.send(request)
        except (TimeoutError, httpx.TimeoutException) as exc:
            if by_deadline:
                raise DeadlineExceeded(f"{self.name}: deadline ran out") from exc
            if isinstance(exc, httpx.ConnectTimeout):
                raise DownstreamUnreachable(self.name, "connect timed out") from exc
            raise DownstreamTimeout(self.name, f"no answer within {budget:g}s") from exc
        except httpx.TransportError as exc:
            raise DownstreamUnreachable(self.name, type(exc).__name__) from exc


def _retryable(error: Exception) -> bool:
    if isinstance(error, DownstreamStatusError):
        return error.status in RETRYABLE_STATUSES
    if isinstance(error, DownstreamUnreachable):
        # Only when no connection was made: the request certainly never reached the server.
        return isinstance(error.__cause__, httpx.ConnectError | httpx.ConnectTimeout)
    return False


def _host_key(url: httpx.URL) -> str:
    return f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
