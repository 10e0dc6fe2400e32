"""The README's curl tour, through the Python client openapi-python-client generates.

Not collected by pytest and not part of the project's mypy run: ``loopwise_client`` exists
only once ``test_generated_clients.py`` has generated it from ``/openapi.json``; that test
then type-checks this file with ``mypy --strict`` against it and runs :func:`tour`. Every
result is narrowed with ``isinstance`` to a generated model, never cast; every error is a
generated ``Problem``; ``raise_on_unexpected_status`` turns any undeclared status into a
failure.
"""

from __future__ import annotations

from http import HTTPStatus

from loopwise_client import AuthenticatedClient, Client
from loopwise_client.api.auth import login, logout
from loopwise_client.api.orders import list_orders, place_order
from loopwise_client.api.overview import read_overview
from loopwise_client.api.preferences import read_preferences, replace_preferences
from loopwise_client.api.users import read_me, register, update_me
from loopwise_client.models import (
    Credentials,
    NewOrder,
    NewOrderItem,
    Order,
    OrderPage,
    Overview,
    Preferences,
    PreferencesUpdate,
    PreferencesUpdateTheme,
    Problem,
    Registration,
    Token,
    User,
    UserUpdate,
)

EMAIL, PASSWORD = "ada@example.com", "correct horse battery"


async def tour(base_url: str) -> list[str]:
    """Run the tour against ``base_url``; returns the checks made, in order."""
    done: list[str] = []
    async with Client(base_url=base_url, raise_on_unexpected_status=True) as anonymous:
        # Register (201), then the same email again: a typed 409 Problem.
        created = await register.asyncio_detailed(
            client=anonymous,
            body=Registration(email=EMAIL, password=PASSWORD, display_name="Ada"),
        )
        assert created.status_code == HTTPStatus.CREATED
        assert isinstance(created.parsed, User)
        assert created.parsed.display_name == "Ada"
        again = await register.asyncio_detailed(
            client=anonymous,
            body=Registration(email=EMAIL.upper(), password=PASSWORD, display_name="Ada"),
        )
        assert isinstance(again.parsed, Problem)
        assert again.parsed.status == 409
        done.append("register")

        # The "3 distinct characters" rule: a typed 422 naming the field.
        weak = await register.asyncio_detailed(
            client=anonymous,
            body=Registration(email="bob@example.com", password="abababab", display_name="B"),
        )
        assert isinstance(weak.parsed, Problem)
        assert weak.parsed.status == 422
        assert weak.parsed.errors
        assert weak.parsed.errors[0].loc == ["body", "password"]
        done.append("password rule")

        # Log in and keep the bearer token.
        logged_in = await login.asyncio_detailed(
            client=anonymous, body=Credentials(email=EMAIL, password=PASSWORD)
        )
        assert isinstance(logged_in.parsed, Token)
        token = logged_in.parsed.access_token
        done.append("login")

        # Wrong passwords: 401, then 429 with a Retry-After the client can read.
        statuses: list[int] = []
        retry_after = ""
        for _ in range(6):
            wrong = await login.asyncio_detailed(
                client=anonymous, body=Credentials(email="nobody@example.com", password="nope")
            )
            assert isinstance(wrong.parsed, Problem)
            statuses.append(wrong.parsed.status)
            retry_after = wrong.headers.get("Retry-After", "")
        assert statuses[0] == 401
        assert statuses[-1] == 429
        assert int(retry_after) >= 1
        done.append("throttled")

    async with AuthenticatedClient(
        base_url=base_url, token=token, raise_on_unexpected_status=True
    ) as client:
        me = await read_me.asyncio_detailed(client=client)
        assert isinstance(me.parsed, User)
        assert me.parsed.email == EMAIL
        profile_tag = me.headers["ETag"]
        unchanged = await read_me.asyncio_detailed(client=client, if_none_match=profile_tag)
        assert unchanged.status_code == HTTPStatus.NOT_MODIFIED
        done.append("me")

        # Place an order: prices in integer cents, the server computes the total.
        placed = await place_order.asyncio_detailed(
            client=client,
            body=NewOrder(
                items=[
                    NewOrderItem(sku="TEA-01", quantity=2, unit_price_cents=450),
                    NewOrderItem(sku="CUP-L", quantity=1, unit_price_cents=1299),
                ]
            ),
        )
        assert isinstance(placed.parsed, Order)
        assert placed.parsed.total_cents == 2199
        page = await list_orders.asyncio_detailed(client=client, limit=20)
        assert isinstance(page.parsed, OrderPage)
        assert [order.id for order in page.parsed.items] == [placed.parsed.id]
        assert page.parsed.next_cursor is None
        done.append("orders")

        # Preferences: read the ETag, then replace the document under If-Match.
        current = await read_preferences.asyncio_detailed(client=client)
        assert isinstance(current.parsed, Preferences)
        unconditional = await replace_preferences.asyncio_detailed(
            client=client, body=PreferencesUpdate(theme=PreferencesUpdateTheme.DARK)
        )
        assert isinstance(unconditional.parsed, Problem)
        assert unconditional.parsed.status == 428
        document = PreferencesUpdate(
            language="en",
            timezone="Europe/Paris",
            theme=PreferencesUpdateTheme.DARK,
            marketing_emails=False,
        )
        replaced = await replace_preferences.asyncio_detailed(
            client=client, body=document, if_match=current.headers["ETag"]
        )
        assert isinstance(replaced.parsed, Preferences)
        assert replaced.parsed.timezone == "Europe/Paris"
        assert replaced.parsed.page_size == 20  # left out: its default
        stale = await replace_preferences.asyncio_detailed(
            client=client, body=document, if_match=current.headers["ETag"]
        )
        assert isinstance(stale.parsed, Problem)
        assert stale.parsed.status == 412
        assert stale.headers["ETag"] == replaced.headers["ETag"]
        done.append("preferences")

        overview = await read_overview.asyncio_detailed(client=client)
        assert isinstance(overview.parsed, Overview)
        assert overview.parsed.preferences.theme == "dark"
        assert overview.parsed.degraded == []
        done.append("overview")

        # Change your name (If-Match optional on PATCH), then log out.
        renamed = await update_me.asyncio_detailed(
            client=client, body=UserUpdate(display_name="Ada L."), if_match=profile_tag
        )
        assert isinstance(renamed.parsed, User)
        assert renamed.parsed.display_name == "Ada L."
        assert renamed.headers["ETag"] != profile_tag
        outdated = await update_me.asyncio_detailed(
            client=client, body=UserUpdate(display_name="Ada"), if_match=profile_tag
        )
        assert isinstance(outdated.parsed, Problem)
        assert outdated.parsed.status == 412
        out = await logout.asyncio_detailed(client=client)
        assert out.status_code == HTTPStatus.NO_CONTENT
        gone = await read_me.asyncio_detailed(client=client)
        assert isinstance(gone.parsed, Problem)
        assert gone.parsed.status == 401
        assert gone.headers["WWW-Authenticate"] == "Bearer"
        done.append("logout")
    return done
