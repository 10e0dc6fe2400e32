"""The optional downstream services behind the overview: loyalty points and shipment tracking.

    async with Downstreams.from_settings(settings) as downstreams:    # the app's lifespan
        part = await downstreams.loyalty(user_id)        # Part(value, degraded, reason)
        parts = await downstreams.shipments(order_ids)   # one call per order, fanned out

Each call has its own timeout (``LOOPWISE_LOYALTY_TIMEOUT``, ...) and ends a little before
the request's deadline, so it always returns: the answer, or a fallback marked
``degraded`` with the reason. An unconfigured downstream is simply absent (``None``, not
degraded). Breaker transitions are logged; :meth:`Downstreams.stats` gives the snapshots
the metrics endpoint exports.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Generic, Self, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from loopwise.patterns import (
    CircuitBreaker,
    CircuitState,
    ClosedResource,
    Downstream,
    DownstreamStats,
    PatternError,
    deadline,
    stream_all,
    time_left,
)
from loopwise.patterns.lifecycle import AsyncResource
from loopwise.service.logs import get_logger
from loopwise.service.settings import Settings

__all__ = ["Downstreams", "LoyaltyPoints", "Part", "Shipment"]

T = TypeVar("T")

_log = get_logger("loopwise.downstreams")

# Give up this long before the request's deadline, so the fallback is returned in time.
_SPARE = 0.01


class LoyaltyPoints(BaseModel):
    user_id: int
    points: int
    tier: str


class Shipment(BaseModel):
    order_id: int
    status: str
    eta: dt.date | None


@dataclass(frozen=True, slots=True)
class Part(Generic[T]):
    """One downstream's share of a response: its value, and whether it fell back."""

    value: T
    degraded: bool = False
    reason: str | None = None


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
        self._opened = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Downstreams:
        return cls(settings)

    async def __aenter__(self) -> Self:
        if self._opened:
            raise ClosedResource("downstreams", "Cannot reopen the downstreams once opened.")
        self._opened = True
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
        return self

    async def aclose(self) -> None:
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

    async def loyalty(self, user_id: int) -> Part[LoyaltyPoints | None]:
        """The user's loyalty points, or ``None`` (degraded if the downstream failed)."""
        if self._loyalty is None:
            return Part(None)
        try:
            async with deadline(self._budget(self._settings.loyalty_timeout)):
                response = await self._loyalty.get(f"/loyalty/{user_id}")
            if response.status_code == 404:
                return Part(None)  # no loyalty account: an answer, not a failure
            response.raise_for_status()
            return Part(LoyaltyPoints.model_validate_json(response.content))
        except ClosedResource:
            raise  # a lifecycle bug, not a downstream failure: never hide it as a fallback
        except (PatternError, httpx.HTTPStatusError, ValidationError) as exc:
            reason = _reason(exc)
            _log.info("downstream_fallback", downstream="loyalty", reason=reason)
            return Part(None, degraded=True, reason=reason)

    async def shipments(self, order_ids: Sequence[int]) -> Part[list[Shipment]]:
        """Shipment status per order, one call each under the per-host limit.

        Orders whose call failed are left out and the part is marked degraded; an order the
        tracker does not know (404) is left out without degrading.
        """
        if self._shipments is None or not order_ids:
            return Part([])
        found: dict[int, Shipment] = {}
        failed = 0
        shipments = self._shipments
        try:
            async with (
                deadline(self._budget(self._settings.shipments_timeout)),
                stream_all(shipments.get, [f"/shipments/{i}" for i in order_ids]) as results,
            ):
                async for outcome in results:
                    response = outcome.value
                    if response is not None and response.status_code == 404:
                        continue
                    if isinstance(outcome.error, ClosedResource):
                        raise outcome.error
                    if response is None or response.status_code != 200:
                        failed += 1
                        continue
                    shipment = Shipment.model_validate_json(response.content)
                    found[shipment.order_id] = shipment
        except ClosedResource:
            raise
        except (PatternError, ValidationError) as exc:
            # Out of time (or a bad answer): keep what arrived, count the rest as failed.
            failed = len(order_ids) - len(found)
            _log.debug("downstream_cut_short", downstream="shipments", reason=_reason(exc))
        ordered = [found[i] for i in order_ids if i in found]
        if failed == 0:
            return Part(ordered)
        reason = f"{failed} of {len(order_ids)} shipment lookups failed"
        _log.info("downstream_fallback", downstream="shipments", reason=reason)
        return Part(ordered, degraded=True, reason=reason)

    def _open(
        self, name: str, url: str, timeout: float, concurrency: int, rate: float
    ) -> Downstream:
        return Downstream(
            name,
            url,
            timeout=timeout,
            concurrency=concurrency,
            rate=rate or None,
            breaker=CircuitBreaker(name, on_state_change=_on_breaker_change),
            transport=self._transport,
        )

    @staticmethod
    def _budget(own: float) -> float:
        left = time_left()
        return own if left is None else max(0.0, min(own, left - _SPARE))


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"
