"""Resilient HTTP to one downstream: a shared client, limits, deadlines, retries, a breaker.

    async with Downstream(
        "loyalty",
        "http://loyalty.internal",
        timeout=0.5,                                     # one attempt, at most
        limits=Limits(concurrency=10, rate=100.0),       # per host
        retry=Retries(attempts=3),                       # idempotent calls only
        breaker=CircuitBreaker("loyalty", cool_down=5.0),
    ) as loyalty:
        async with fail_after(0.3):                      # the request's budget
            response = await loyalty.get("/loyalty/42")  # httpx timeout <= time left

One ``httpx.AsyncClient`` per downstream, opened once and shared by every call, so
connections are reused (never a client per call). Each attempt:

1. asks the :class:`~loopwise.patterns.breaker.CircuitBreaker` (fails fast while open);
2. waits for a per-host slot of its :class:`~loopwise.patterns.limits.Limiter` (this
   process's :class:`~loopwise.patterns.limits.KeyedLimits` unless given another), no
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

Inside a trace, each call is a CLIENT span (``GET loyalty``): one ``attempt`` event per
try with the breaker's state, the ``limit`` wait, the ``send`` timeout, the failure if any;
its ``traceparent`` goes out with the request. Outside a trace none of that runs.

Cancelling a call (a deadline, a fan-out that stopped early) must not poison the pool
(httpx issue 1461); ``tests/patterns/test_outbound_server.py`` proves it against a server.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from loopwise.patterns.breaker import Attempt, BreakerStats, CircuitBreaker
from loopwise.patterns.cancel_safe import CancelSafeTransport
from loopwise.patterns.deadlines import time_left
from loopwise.patterns.exceptions import (
    DeadlineExceeded,
    DownstreamStatusError,
    DownstreamTimeout,
    DownstreamUnreachable,
    LimitTimeout,
)
from loopwise.patterns.lifecycle import AsyncResource
from loopwise.patterns.limits import KeyedLimits, Limiter, Limits, LimitsStats
from loopwise.patterns.retries import RetryBudget, RetryBudgetStats, RetryPolicy

__all__ = [
    "IDEMPOTENT_METHODS",
    "RETRYABLE_STATUSES",
    "Downstream",
    "DownstreamStats",
    "Retries",
]

# The global API's tracer: a no-op until an application installs an SDK provider.
_tracer = trace.get_tracer("loopwise.patterns")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True, kw_only=True)
class Retries:
    """How a :class:`Downstream` retries a failed idempotent call (when retrying helps).

        Retries(attempts=3)                            # 2 retries at most, 50 ms then 100 ms caps
        Retries(attempts=1)                            # never retry
        Retries(attempts=5, budget=shared_budget)      # share one budget between downstreams

    Args:
        attempts: tries per idempotent call, the first included.
        wait_initial: backoff cap before the first retry (full jitter below it).
        wait_max: the largest backoff cap.
        budget: shared budget for retries; each downstream makes its own (10%, >= 1/s)
            when None.
    """

    attempts: int = 3
    wait_initial: float = 0.05
    wait_max: float = 1.0
    budget: RetryBudget | None = None


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
        limits: per-host bounds (10 at once, no rate limit by default), or a
            :class:`~loopwise.patterns.limits.Limiter` shared with others.
        retry: how idempotent calls are retried; ``Retries()`` by default.
        breaker: the circuit breaker; a default one named ``name`` when None.
        pool: the connection pool's ``httpx.Limits``; by default as many connections as
            ``limits.concurrency`` (idle ones kept 5 s).
        headers: sent with every request.
        transport: an httpx transport, e.g. ``httpx.MockTransport`` in tests.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        timeout: float = 2.0,
        limits: Limits | Limiter | None = None,
        retry: Retries | None = None,
        breaker: CircuitBreaker | None = None,
        pool: httpx.Limits | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"`timeout` must be positive, got {timeout}")
        retry = retry or Retries()
        self.name = name
        self.base_url = base_url
        self.timeout = timeout
        if limits is None or isinstance(limits, Limits):
            limits = KeyedLimits.of(name, limits or Limits())
        self.limits: Limiter = limits
        self.breaker = breaker or CircuitBreaker(name)
        self.retry_budget = retry.budget or RetryBudget()
        self._retries = RetryPolicy(
            on=_retryable,
            attempts=retry.attempts,
            timeout=None,  # the deadline in force bounds retries; this has none of its own
            wait_initial=retry.wait_initial,
            wait_max=retry.wait_max,
            budget=self.retry_budget,
        )
        if pool is None:
            connections = limits.stats().concurrency or 100  # httpx's own default: 100
            pool = httpx.Limits(
                max_connections=connections,
                max_keepalive_connections=connections,
                keepalive_expiry=5.0,
            )
        self._pool = pool
        self._transport = transport
        self._client_args: dict[str, Any] = {
            "base_url": base_url,
            "headers": dict(headers or {}),
            "timeout": httpx.Timeout(timeout),
            "follow_redirects": False,  # a redirect from a downstream is an answer, not a hop
        }
        self._client: httpx.AsyncClient | None = None

    @property
    def resource_name(self) -> str:
        return f"downstream {self.name!r}"

    async def _aopen(self) -> None:
        transport = self._transport or CancelSafeTransport(limits=self._pool)
        self._client = httpx.AsyncClient(transport=transport, **self._client_args)

    async def _aclose(self) -> None:
        """Close the client and its connections."""
        client, self._client = self._client, None
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
            ResourceClosed: used before ``async with`` or after closing.
        """
        self._check_open()
        assert self._client is not None  # open: _aopen made it
        request = self._client.build_request(
            method, url, params=params, headers=headers, json=json, content=content
        )
        retryable = request.method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        if not trace.get_current_span().get_span_context().is_valid:
            return await self._call(request, retryable=retryable)
        with _tracer.start_as_current_span(
            f"{request.method} {self.name}",
            kind=SpanKind.CLIENT,
            attributes={
                "loopwise.downstream": self.name,
                "http.request.method": request.method,
                "url.full": str(request.url.copy_with(query=None)),
                "loopwise.downstream.timeout_s": self.timeout,
                "loopwise.downstream.retryable": retryable,
            },
        ) as span:
            # The client span's context, even unsampled: the downstream continues the trace.
            propagate.inject(request.headers)
            response = await self._call(request, retryable=retryable)
            span.set_attribute("http.response.status_code", response.status_code)
            return response

    async def _call(self, request: httpx.Request, *, retryable: bool) -> httpx.Response:
        assert self._client is not None  # open: checked by request()
        if not retryable:
            return await self._attempt(self._client, request)
        return await self._retries.call(self._attempt, self._client, request)

    def stats(self) -> DownstreamStats:
        return DownstreamStats(
            self.name, self.limits.stats(), self.breaker.stats(), self.retry_budget.stats()
        )

    async def _attempt(self, client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
        span = trace.get_current_span()
        recording = span.is_recording()
        if recording:
            span.add_event("attempt", {"breaker": self.breaker.state.value})
        async with self.breaker.admit() as verdict:
            try:
                asked = time.perf_counter()
                async with self.limits.acquire(_host_key(request.url)):
                    if recording:
                        span.add_event("limit", {"wait_s": time.perf_counter() - asked})
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
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event("send", {"timeout_s": budget, "by_deadline": by_deadline})
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
