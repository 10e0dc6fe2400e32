"""Orders: place one, page through yours newest first, read one.

Money is integer cents end to end; the total is computed here, never taken from the
client. Pages are keyset-paginated on ``id`` (``WHERE id < last_seen ORDER BY id DESC``),
so a page costs the same at any depth and concurrent inserts never shift rows between
pages. The cursor is opaque to clients and checked on the way back in: a tampered one is
400, never 500.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field

from loopwise.service.deps import CurrentUser, Pool, VerifiedUser
from loopwise.service.exceptions import BadRequest, NotFound, Unauthenticated
from loopwise.service.http.responses import Answer, declare

__all__ = [
    "BIGINT_MAX",
    "NewOrderItem",
    "Order",
    "OrderItem",
    "OrderPage",
    "decode_cursor",
    "encode_cursor",
    "order_total",
    "router",
]

router = APIRouter(tags=["orders"])

BAD_CURSOR = Answer(400, "`cursor` is not one this service returned.")
NO_SUCH_ORDER = Answer(404, "No such order among yours (anyone else's is 404 too).")

BIGINT_MAX = 2**63 - 1
MAX_ITEMS, MAX_QUANTITY, MAX_UNIT_PRICE_CENTS = 100, 1000, 10**9

Sku = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


Quantity = Annotated[int, Field(ge=1, le=MAX_QUANTITY)]
UnitPrice = Annotated[int, Field(ge=0, le=MAX_UNIT_PRICE_CENTS)]


class NewOrderItem(BaseModel):
    """A line of an order being placed: strict, unknown keys refused."""

    model_config = ConfigDict(strict=True, extra="forbid")

    sku: Sku
    quantity: Quantity
    unit_price_cents: UnitPrice


class OrderItem(BaseModel):
    """A line of a stored order. Open for additions: clients should ignore unknown keys."""

    sku: str
    quantity: int
    unit_price_cents: int


class NewOrder(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    items: Annotated[list[NewOrderItem], Field(min_length=1, max_length=MAX_ITEMS)]


class Order(BaseModel):
    id: int
    items: list[OrderItem]
    total_cents: int
    created_at: datetime


class OrderPage(BaseModel):
    items: list[Order]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


def order_total(items: Sequence[NewOrderItem | OrderItem]) -> int:
    """The sum of quantity * unit price, checked to fit PostgreSQL's bigint.

    Raises:
        BadRequest: the total would not fit (cannot happen within the item limits, which
            cap it at 10^14 cents; checked anyway so a limit change cannot overflow).
    """
    total = sum(item.quantity * item.unit_price_cents for item in items)
    if total > BIGINT_MAX:
        raise BadRequest("The order total exceeds what can be stored.")
    return total


_CURSOR = re.compile(r"o1:([1-9][0-9]{0,18})")


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"o1:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The order id a cursor points after.

    Raises:
        BadRequest: the cursor is not one this service made.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        match = _CURSOR.fullmatch(raw.decode("ascii"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        match = None
    if match is None or int(match[1]) > BIGINT_MAX:
        raise BadRequest("`cursor` is not a cursor this service returned.")
    return int(match[1])


# One statement, so the order and its items are written atomically in one round trip.
_INSERT_ORDER = """
WITH o AS (
    INSERT INTO orders (user_id, total_cents) VALUES ($1, $2) RETURNING id, created_at
), i AS (
    INSERT INTO order_items (order_id, line_no, sku, quantity, unit_price_cents)
    SELECT o.id, t.line_no, t.sku, t.quantity, t.unit_price_cents
    FROM o, unnest($3::text[], $4::int[], $5::bigint[])
         WITH ORDINALITY AS t(sku, quantity, unit_price_cents, line_no)
)
SELECT id, created_at FROM o
"""

_ITEMS_OF = """
SELECT array_agg(sku ORDER BY line_no) AS skus,
       array_agg(quantity ORDER BY line_no) AS quantities,
       array_agg(unit_price_cents ORDER BY line_no) AS prices
FROM order_items WHERE order_id = o.id
"""

_READ_ORDER = f"""
SELECT o.id, o.total_cents, o.created_at, i.skus, i.quantities, i.prices
FROM orders o CROSS JOIN LATERAL ({_ITEMS_OF}) i
WHERE o.id = $1 AND o.user_id = $2
"""  # noqa: S608 - composed from constants, no input

# `id < $2` with $2 = BIGINT_MAX for the first page keeps one plan for every page.
_PAGE = f"""
SELECT o.id, o.total_cents, o.created_at, i.skus, i.quantities, i.prices
FROM (
    SELECT id, total_cents, created_at FROM orders
    WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3
) o CROSS JOIN LATERAL ({_ITEMS_OF}) i
ORDER BY o.id DESC
"""  # noqa: S608 - composed from constants, no input


def _order(row: asyncpg.Record) -> Order:
    items = [
        OrderItem(sku=sku, quantity=quantity, unit_price_cents=price)
        for sku, quantity, price in zip(row["skus"], row["quantities"], row["prices"], strict=True)
    ]
    return Order(
        id=row["id"], items=items, total_cents=row["total_cents"], created_at=row["created_at"]
    )


@router.post(
    "/users/me/orders",
    status_code=status.HTTP_201_CREATED,
    responses={403: {"description": "The account's email address is not verified yet."}},
)
async def place_order(body: NewOrder, caller: VerifiedUser, pool: Pool) -> Order:
    """Place an order; the total is computed by the server. Needs a verified address."""
    total = order_total(body.items)
    try:
        row = await pool.fetchrow(
            _INSERT_ORDER,
            caller.id,
            total,
            [item.sku for item in body.items],
            [item.quantity for item in body.items],
            [item.unit_price_cents for item in body.items],
        )
    except asyncpg.ForeignKeyViolationError:
        # The account was deleted while this request was in flight.
        raise Unauthenticated("The account no longer exists.") from None
    assert row is not None
    items = [OrderItem(**item.model_dump()) for item in body.items]
    return Order(id=row["id"], items=items, total_cents=total, created_at=row["created_at"])


@router.get("/users/me/orders", responses=declare(BAD_CURSOR))
async def list_orders(
    caller: CurrentUser,
    pool: Pool,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> OrderPage:
    """Your orders, newest first, ``limit`` at a time."""
    before = BIGINT_MAX if cursor is None else decode_cursor(cursor)
    # One row more than asked says whether another page exists, without a count.
    rows = await pool.fetch(_PAGE, caller.id, before, limit + 1)
    orders = [_order(row) for row in rows[:limit]]
    next_cursor = encode_cursor(orders[-1].id) if len(rows) > limit else None
    return OrderPage(items=orders, next_cursor=next_cursor)


@router.get("/users/me/orders/{order_id}", responses=declare(NO_SUCH_ORDER))
async def read_order(
    order_id: Annotated[int, Path(ge=1, le=BIGINT_MAX)], caller: CurrentUser, pool: Pool
) -> Order:
    """One of your orders; anyone else's is 404."""
    row = await pool.fetchrow(_READ_ORDER, order_id, caller.id)
    if row is None:
        raise NotFound(f"No order {order_id} among yours.")
    return _order(row)
