"""The optional downstream services behind the overview: loyalty points and shipment tracking.

    async with Downstreams.from_settings(settings) as downstreams:    # the app's lifespan
        points = await downstreams.loyalty(user_id)      # LoyaltyPoints, or None (no account)
        found = await downstreams.shipments(order_ids)   # one call per order, fanned out

Each call has its own timeout (``LOOPWISE_LOYALTY_TIMEOUT``, ...) and ends a margin before
the request's deadline: it returns the answer, or raises why there is none (a
:class:`~loopwise.patterns.PatternError`, or the bad answer's own error). Falling back is
the caller's decision, made in one place: the overview runs each call as an optional
:func:`~loopwise.patterns.fan_out` branch, whose ``degraded`` list is the only record of
what fell back. Breaker transitions are logged; :meth:`Downstreams.stats` gives the
snapshots the metrics endpoint exports.

With ``LOOPWISE_REDIS_URL`` set, each downstream's concurrency and rate limits and its
breaker are shared by every process through Redis (:class:`~loopwise.patterns.RedisLimits`,
:class:`~loopwise.patterns.SharedBreaker`); the :class:`~loopwise.patterns.RedisStore` opens
and closes with the downstreams. Unset, they are per process, and start-up says so.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import httpx
from pydantic import BaseModel

from loopwise.patterns import (
    DEADLINE_MARGIN,
    CircuitBreaker,
    CircuitState,
    Downstream,
    DownstreamError,
    DownstreamStats,
    Limiter,
    Limits,
    ResourceClosed,
    fail_after,
    stream_all,
    time_left,
)
from loopwise.patterns.lifecycle import AsyncResource
from loopwise.service.logs import get_logger
from loopwise.service.settings import Settings

if TYPE_CHECKING:
    from loopwise.patterns.shared_store import RedisStore

__all__ = ["Downstreams", "LoyaltyPoints", "Shipment"]

_log = get_logger("loopwise.downstreams")


class LoyaltyPoints(BaseModel):
    user_id: int
    points: int
    tier: str


class Shipment(BaseModel):
    order_id: int
    status: str
    eta: dt.date | None


def _on_breaker_change(name: str, old: CircuitState, new: CircuitState) -> None:
    log = _log.warning if new is CircuitState.OPEN else _log.info
    log("downstream_breaker_changed", downstream=name, old=old.value, new=new.value)


def _on_store_mode(shared: bool, reason: str) -> None:
    # One line on entering the fallback, one on leaving it (the store reports nothing else).
    if shared:
        _log.info("shared_limits_resumed", reason=reason)
    else:
        _log.warning("shared_limits_fallback", reason=reason)


class Downstreams(AsyncResource):
    """The configured downstreams, opened together for the app's lifetime.

    Args:
        settings: the URLs, timeouts and limits; ``redis_url`` shares the limits.
        transport: an httpx transport for every downstream (tests).
        store: the Redis to share limits and breakers through; by default one for
            ``settings.redis_url`` when set. Opened and closed with the downstreams.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        store: RedisStore | None = None,
    ):
        self._settings = settings
        self._transport = transport
        if store is None and settings.redis_url is not None:
            # Imported here, where it is used: the lifespan has loaded it off the loop.
            from loopwise.patterns.shared_store import RedisStore

            store = RedisStore.from_url(
                settings.redis_url,
                timeout=settings.redis_timeout,
                instances=settings.redis_processes,
                on_mode_change=_on_store_mode,
            )
        self._store = store
        self._stack = AsyncExitStack()
        self._loyalty: Downstream | None = None
        self._shipments: Downstream | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Downstreams:
        return cls(settings)

    @property
    def resource_name(self) -> str:
        return "downstreams"

    async def _aopen(self) -> None:
        s = self._settings
        async with AsyncExitStack() as stack:
            if self._store is not None and (s.loyalty_url or s.shipments_url):
                await stack.enter_async_context(self._store)
            if s.loyalty_url is not None:
                self._loyalty = await stack.enter_async_context(
                    self._open(
                        "loyalty",
                        s.loyalty_url,
                        s.loyalty_timeout,
                        s.loyalty_concurrency,
                        s.loyalty_rate,
                    )
                )
            if s.shipments_url is not None:
                self._shipments = await stack.enter_async_context(
                    self._open(
                        "shipments",
                        s.shipments_url,
                        s.shipments_timeout,
                        s.shipments_concurrency,
                        s.shipments_rate,
                    )
                )
            self._stack = stack.pop_all()
        _log.info(
            "downstreams_opened",
            configured=sorted(self.stats()),
            limits=(
                "per process (LOOPWISE_REDIS_URL unset)"
                if self._store is None
                else "shared by every process through redis"
            ),
        )

    async def _aclose(self) -> None:
        await self._stack.aclose()

    @property
    def has_loyalty(self) -> bool:
        return self._loyalty is not None

    @property
    def has_shipments(self) -> bool:
        return self._shipments is not None

    def stats(self) -> dict[str, DownstreamStats]:
        """Snapshots of every configured downstream's limits, breaker and retry budget."""
        return {ds.name: ds.stats() for ds in (self._loyalty, self._shipments) if ds is not None}

    async def loyalty(self, user_id: int) -> LoyaltyPoints | None:
        """The user's loyalty points; None when the user has no account there.

        Raises:
            RuntimeError: the loyalty downstream is not configured (see ``has_loyalty``).
            PatternError: the call failed or ran out of time (after any retries).
            httpx.HTTPStatusError: an answer that is neither points nor 404.
            pydantic.ValidationError: points in a shape we do not know.
        """
        if self._loyalty is None:
            raise RuntimeError("the loyalty downstream is not configured")
        async with fail_after(self._budget(self._settings.loyalty_timeout)):
            response = await self._loyalty.get(f"/loyalty/{user_id}")
        if response.status_code == 404:
            return None  # no loyalty account: an answer, not a failure
        response.raise_for_status()
        return LoyaltyPoints.model_validate_json(response.content)

    async def shipments(self, order_ids: Sequence[int]) -> list[Shipment]:
        """Shipment status per order, one call each under the per-host limit, in order.

        An order the tracker does not know (404) is left out: an answer, not a failure.

        Raises:
            RuntimeError: the shipments downstream is not configured.
            DownstreamError: some lookups failed; the message says how many.
            PatternError: out of time before every lookup finished.
            pydantic.ValidationError: a shipment in a shape we do not know.
        """
        if self._shipments is None:
            raise RuntimeError("the shipments downstream is not configured")
        found: dict[int, Shipment] = {}
        failed = 0
        urls = [f"/shipments/{i}" for i in order_ids]
        async with (
            fail_after(self._budget(self._settings.shipments_timeout)),
            stream_all(self._shipments.get, urls) as results,
        ):
            async for outcome in results:
                if isinstance(outcome.error, ResourceClosed):
                    raise outcome.error  # a lifecycle bug, not a failed lookup: never hide it
                response = outcome.value
                if response is not None and response.status_code == 404:
                    continue
                if response is None or response.status_code != 200:
                    failed += 1
                    continue
                shipment = Shipment.model_validate_json(response.content)
                found[shipment.order_id] = shipment
        if failed:
            raise DownstreamError(
                "shipments", f"{failed} of {len(order_ids)} shipment lookups failed"
            )
        return [found[i] for i in order_ids if i in found]

    def _open(
        self, name: str, url: str, timeout: float, concurrency: int, rate: float
    ) -> Downstream:
        bounds = Limits(concurrency=concurrency, rate=rate or None)
        limits: Limits | Limiter = bounds
        breaker = CircuitBreaker(name, on_state_change=_on_breaker_change)
        if self._store is not None:
            from loopwise.patterns.shared_breaker import SharedBreaker
            from loopwise.patterns.shared_limits import RedisLimits

            limits = RedisLimits(self._store, name, bounds, lease=self._settings.redis_lease)
            breaker = SharedBreaker(self._store, name, on_state_change=_on_breaker_change)
        return Downstream(
            name, url, timeout=timeout, limits=limits, breaker=breaker, transport=self._transport
        )

    @staticmethod
    def _budget(own: float) -> float:
        left = time_left()
        # Give up a margin before the request's deadline, so the fallback is returned in time.
        return own if left is None else max(0.0, min(own, left - DEADLINE_MARGIN))
