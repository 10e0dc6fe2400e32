"""Orders: placing, reading, keyset pagination, and hostile input."""

from __future__ import annotations

import base64

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopwise.service.accounts.orders import (
    BIGINT_MAX,
    OrderItem,
    decode_cursor,
    encode_cursor,
    order_total,
)
from loopwise.service.exceptions import BadRequest
from tests.service.accounts.conftest import Account, MakeAccount

ITEM = {"sku": "TEA-01", "quantity": 2, "unit_price_cents": 450}

_items = st.lists(
    st.fixed_dictionaries(
        {
            "sku": st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z"),
            "quantity": st.integers(1, 1000),
            "unit_price_cents": st.integers(0, 10**9),
        }
    ),
    min_size=1,
    max_size=100,
)


def _case(response: httpx.Response) -> str:
    """Which request failed, for the assertion message."""
    return f"{response.request.method} {response.request.url} {response.request.content[:120]!r}"


async def _place(
    client: httpx.AsyncClient, account: Account, items: list[dict[str, object]]
) -> int:
    response = await client.post("/users/me/orders", headers=account.headers, json={"items": items})
    assert response.status_code == 201, response.text
    order_id: int = response.json()["id"]
    return order_id


async def test_place_and_read_an_order(client: httpx.AsyncClient, alice: Account) -> None:
    """201 with the items in order and the server's total; reading it back matches."""
    items = [ITEM, {"sku": "CUP.large", "quantity": 1, "unit_price_cents": 1299}]
    placed = await client.post("/users/me/orders", headers=alice.headers, json={"items": items})
    assert placed.status_code == 201
    body = placed.json()
    assert body["items"] == items
    assert body["total_cents"] == 2 * 450 + 1299
    read = await client.get(f"/users/me/orders/{body['id']}", headers=alice.headers)
    assert read.status_code == 200
    assert read.json() == body


async def test_client_total_is_refused(client: httpx.AsyncClient, alice: Account) -> None:
    """A client cannot send its own total: it is an unknown field."""
    response = await client.post(
        "/users/me/orders", headers=alice.headers, json={"items": [ITEM], "total_cents": 1}
    )
    assert response.status_code == 422


INVALID_ITEMS = [
    [],
    [ITEM] * 101,
    [{**ITEM, "quantity": 0}],
    [{**ITEM, "quantity": -1}],
    [{**ITEM, "quantity": 1001}],
    [{**ITEM, "quantity": 2**64}],
    [{**ITEM, "quantity": 1.5}],
    [{**ITEM, "quantity": "2"}],
    [{**ITEM, "quantity": True}],
    [{**ITEM, "unit_price_cents": -1}],
    [{**ITEM, "unit_price_cents": 10**9 + 1}],
    [{**ITEM, "unit_price_cents": 10**30}],
    [{**ITEM, "unit_price_cents": 4.5}],
    [{**ITEM, "sku": ""}],
    [{**ITEM, "sku": "x" * 65}],
    [{**ITEM, "sku": "'; DROP TABLE orders;--"}],
    [{**ITEM, "sku": "☕"}],
    [{**ITEM, "sku": "TEA\n"}],
    [{**ITEM, "sku": None}],
    [{"sku": "TEA", "quantity": 1}],
    [{**ITEM, "discount": 5}],
    ["TEA"],
    "TEA",
    None,
]


async def test_invalid_orders_are_422(client: httpx.AsyncClient, alice: Account) -> None:
    """Out-of-range, mistyped, missing and extra item fields are 422, never 500."""
    for items in INVALID_ITEMS:
        response = await client.post(
            "/users/me/orders", headers=alice.headers, json={"items": items}
        )
        assert response.status_code == 422, _case(response)
        assert response.headers["content-type"] == "application/problem+json"


MALFORMED_ORDER_BODIES = [
    (b'{"items": [', 400),
    (b"", 422),
    (b"{}", 422),
    (b'{"items": {}}', 422),
]


async def test_malformed_order_bodies(client: httpx.AsyncClient, alice: Account) -> None:
    """Broken JSON is 400, the wrong shape 422."""
    for content, status in MALFORMED_ORDER_BODIES:
        response = await client.post(
            "/users/me/orders",
            headers={**alice.headers, "content-type": "application/json"},
            content=content,
        )
        assert response.status_code == status, _case(response)


async def test_huge_order_body_is_413(client: httpx.AsyncClient, alice: Account) -> None:
    """An order body over the size limit is refused before parsing."""
    items = [{**ITEM, "sku": "A" * 60}] * 1000
    response = await client.post("/users/me/orders", headers=alice.headers, json={"items": items})
    assert response.status_code == 413


async def test_other_users_orders_are_404(
    client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    """Bob cannot read Alice's order, nor see it in his list."""
    order_id = await _place(client, alice, [ITEM])
    assert (
        await client.get(f"/users/me/orders/{order_id}", headers=bob.headers)
    ).status_code == 404
    listing = await client.get("/users/me/orders", headers=bob.headers)
    assert listing.json() == {"items": [], "next_cursor": None}


ORDER_IDS = [
    ("424242", 404),
    (str(BIGINT_MAX), 404),
    ("0", 422),
    ("-5", 422),
    (str(2**63), 422),
    ("x", 422),
]


async def test_order_ids(client: httpx.AsyncClient, alice: Account) -> None:
    """Unknown ids are 404; ids that cannot be orders are 422."""
    for order_id, status in ORDER_IDS:
        response = await client.get(f"/users/me/orders/{order_id}", headers=alice.headers)
        assert response.status_code == status, _case(response)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


TAMPERED_CURSORS = [
    "garbage!",
    "====",
    _b64(b"o1:0"),
    _b64(b"o1:-1"),
    _b64(b"o1:99999999999999999999"),
    _b64(b"o1:9223372036854775808"),
    _b64(b"o2:5"),
    _b64(b"o1:5 OR 1=1"),
    _b64("o1:\u0665".encode()),
    _b64(b"\xff\xfe"),
    "\U0001f680",
]


async def test_tampered_cursor_is_400(client: httpx.AsyncClient, alice: Account) -> None:
    """A cursor this service did not make is 400, never 500."""
    for cursor in TAMPERED_CURSORS:
        response = await client.get(
            "/users/me/orders", headers=alice.headers, params={"cursor": cursor}
        )
        assert response.status_code == 400, _case(response)
        assert "cursor" in response.json()["detail"]


BAD_PAGE_PARAMETERS: list[dict[str, str | int]] = [
    {"limit": 0},
    {"limit": 101},
    {"limit": "x"},
    {"cursor": "a" * 65},
]


async def test_bad_page_parameters_are_422(client: httpx.AsyncClient, alice: Account) -> None:
    """limit outside 1..100 and overlong cursors are 422."""
    for params in BAD_PAGE_PARAMETERS:
        response = await client.get("/users/me/orders", headers=alice.headers, params=params)
        assert response.status_code == 422, _case(response)


def test_cursor_round_trips() -> None:
    """A cursor decodes to the id it was made from, at the extremes too."""
    for order_id in (1, 42, BIGINT_MAX):
        assert decode_cursor(encode_cursor(order_id)) == order_id
    with pytest.raises(BadRequest):
        decode_cursor("")


@given(items=_items)
@settings(max_examples=60, deadline=None)
def test_order_total_is_the_sum_of_lines(items: list[dict[str, int | str]]) -> None:
    """The total is exactly the sum of quantity times unit price, within bigint."""
    models = [OrderItem.model_validate(item) for item in items]
    total = order_total(models)
    assert total == sum(int(i["quantity"]) * int(i["unit_price_cents"]) for i in items)
    assert 0 <= total <= BIGINT_MAX


@given(items=_items)
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
async def test_server_total_matches_items(
    client: httpx.AsyncClient, alice: Account, items: list[dict[str, object]]
) -> None:
    """Whatever valid items are sent, the stored order has them and their exact total."""
    order_id = await _place(client, alice, items)
    read = await client.get(f"/users/me/orders/{order_id}", headers=alice.headers)
    body = read.json()
    assert body["items"] == items
    assert body["total_cents"] == sum(
        int(i["quantity"]) * int(i["unit_price_cents"])  # type: ignore[call-overload]
        for i in items
    )


@given(count=st.integers(0, 25), limit=st.integers(1, 8), data=st.data())
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
async def test_pagination_never_skips_or_repeats(
    client: httpx.AsyncClient,
    make_account: MakeAccount,
    bob: Account,
    count: int,
    limit: int,
    data: st.DataObject,
) -> None:
    """Paging with any limit, while others place orders, yields each order exactly once."""
    account = await make_account()
    placed = [await _place(client, account, [ITEM]) for _ in range(count)]
    # Another user's orders interleave in the id sequence and must never show up.
    interleave = data.draw(st.integers(0, 3))
    for _ in range(interleave):
        await _place(client, bob, [ITEM])
    seen: list[int] = []
    cursor: str | None = None
    for _ in range(count + 2):
        params: dict[str, str | int] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        page = (await client.get("/users/me/orders", headers=account.headers, params=params)).json()
        assert len(page["items"]) <= limit
        seen.extend(order["id"] for order in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(placed, reverse=True)
