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
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from contextlib import AsyncExitStack

import httpx
from pydantic import BaseModel

from loopwise.patterns import (
    DEADLINE_MARGIN,
    CircuitBreaker,
    CircuitState,
    Downstream,
    DownstreamError,
    DownstreamStats,
    Limits,
    ResourceClosed,
    fail_after,
    stream_all,
    time_left,
)
from loopwise.patterns.lifecycle import AsyncResource
from loopwise.service.logs import get_logger
from loopwise.service.settings import Settings

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


class Downstreams(AsyncResource):
    """The configured downstreams, opened together for the app's lifetime."""

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None):
        self._settings = settings
        self._transport = transport
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
        _log.info("downstreams_opened", configured=sorted(self.stats()))

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
        return Downstream(
            name,
            url,
            timeout=timeout,
            limits=Limits(concurrency=concurrency, rate=rate or None),
            breaker=CircuitBreaker(name, on_state_change=_on_breaker_change),
            transport=self._transport,
        )

    @staticmethod
    def _budget(own: float) -> float:
        left = time_left()
        # Give up a margin before the request's deadline, so the fallback is returned in time.
        return own if left is None else max(0.0, min(own, left - DEADLINE_MARGIN))
