"""The overview: your profile, recent orders and preferences, plus downstream parts.

Gathered with :func:`loopwise.patterns.fan_out` under one deadline for the request
(``LOOPWISE_OVERVIEW_DEADLINE``), counted from its arrival: authentication (and any wait
for a pooled connection) spends the same budget the user waits on. Everything that lives
in PostgreSQL is ONE required branch running ONE fused query: measured on 2 cores, one
round trip beat the same reads fanned out over pooled connections (see
docs/decisions/index.md). Fan-out pays across different resources: downstream services join as
optional branches, each with its own timeout and fallback. The fan-out's ``degraded`` list
is the one record of what fell back: it becomes the response's ``degraded``, and each
fallback is logged once, here, with its reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from fastapi import APIRouter, Depends
from pydantic import BaseModel

from loopwise.patterns import Branch, Deadline, DeadlineExceeded, fan_out, optional, required
from loopwise.service.accounts.orders import Order
from loopwise.service.accounts.preferences import Preferences
from loopwise.service.accounts.users import User
from loopwise.service.deps import CurrentUser, Downstreams_, Pool, Settings_
from loopwise.service.downstreams import LoyaltyPoints, Shipment
from loopwise.service.exceptions import Unavailable
from loopwise.service.http.responses import Answer, declare
from loopwise.service.identity.sessions import Caller
from loopwise.service.logs import get_logger

__all__ = ["Overview", "router"]

router = APIRouter(tags=["overview"])

RECENT_ORDERS = 5
DEADLINE_MISSED = Answer(
    503, "Your own data could not be gathered within the deadline.", ("Retry-After",)
)

_log = get_logger("loopwise.overview")


class _Stored(BaseModel):
    """What the fused query returns, parsed from its JSON in one pass (Rust)."""

    recent_orders: list[Order]
    preferences: Preferences | None


class Overview(BaseModel):
    profile: User
    recent_orders: list[Order]
    preferences: Preferences
    loyalty: LoyaltyPoints | None
    shipments: list[Shipment]
    degraded: list[str]


_STORED = """
SELECT json_build_object(
    'preferences', (SELECT document FROM preferences WHERE user_id = $1),
    'recent_orders', COALESCE((
        SELECT json_agg(json_build_object(
            'id', o.id,
            'total_cents', o.total_cents,
            'created_at', o.created_at,
            'items', (
                SELECT json_agg(json_build_object(
                    'sku', i.sku, 'quantity', i.quantity, 'unit_price_cents', i.unit_price_cents
                ) ORDER BY i.line_no)
                FROM order_items i WHERE i.order_id = o.id
            )
        ) ORDER BY o.id DESC)
        FROM (
            SELECT id, total_cents, created_at FROM orders
            WHERE user_id = $1 ORDER BY id DESC LIMIT $2
        ) o
    ), '[]'::json)
)::text
"""


async def _load_stored(pool: asyncpg.Pool, caller: Caller) -> _Stored:
    document: str = await pool.fetchval(_STORED, caller.id, RECENT_ORDERS)
    # The rows were validated on their way in; strict=False lets JSON timestamps parse.
    return _Stored.model_validate_json(document, strict=False)


async def _deadline_from_arrival(settings: Settings_) -> AsyncIterator[None]:
    # A route-level dependency, so FastAPI resolves it before the caller's authentication.
    with Deadline.after(settings.overview_deadline).in_force():
        yield


@router.get(
    "/users/me/overview",
    dependencies=[Depends(_deadline_from_arrival)],
    responses=declare(DEADLINE_MISSED),
)
async def read_overview(
    caller: CurrentUser, pool: Pool, settings: Settings_, downstreams: Downstreams_
) -> Overview:
    """Everything about you at once; optional parts that fail are listed in `degraded`."""
    orders_known: asyncio.Future[_Stored] = asyncio.get_running_loop().create_future()

    async def load_stored() -> _Stored:
        loaded = await _load_stored(pool, caller)
        orders_known.set_result(loaded)
        return loaded

    async def load_shipments() -> list[Shipment]:
        # Needs the recent orders' ids, so it starts when the (fast) database branch ends,
        # while loyalty is already on the wire. If that branch fails, fan_out cancels this.
        stored = await orders_known
        return await downstreams.shipments([order.id for order in stored.recent_orders])

    # Only configured downstreams get a branch: one that is not configured is absent, never
    # degraded (and costs no task).
    stored = required("stored", load_stored)
    branches: list[Branch[Any]] = [stored]
    loyalty: Branch[LoyaltyPoints | None] | None = None
    shipments: Branch[list[Shipment]] | None = None
    if downstreams.has_loyalty:
        loyalty = optional("loyalty", lambda: downstreams.loyalty(caller.id), fallback=None)
        branches.append(loyalty)
    if downstreams.has_shipments:
        shipments = optional("shipments", load_shipments, fallback=[])
        branches.append(shipments)
    try:
        # `within` is a cap; the deadline in force, started at arrival, ends it sooner.
        result = await fan_out(*branches, within=settings.overview_deadline)
    except DeadlineExceeded:
        raise Unavailable("The overview could not be gathered in time.", retry_after=1) from None
    for name in result.degraded:
        _log.info("downstream_fallback", downstream=name, reason=result.reasons[name])
    parts = result.get_value(stored)
    return Overview(
        profile=User.of(caller),
        recent_orders=parts.recent_orders,
        preferences=parts.preferences or Preferences(),
        loyalty=None if loyalty is None else result.get_value(loyalty),
        shipments=[] if shipments is None else result.get_value(shipments),
        degraded=list(result.degraded),
    )
