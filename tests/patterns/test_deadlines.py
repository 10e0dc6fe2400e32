"""A deadline put in force without a cancel scope: inherited, nested, and reset after."""

from __future__ import annotations

import asyncio

from loopwise.patterns import Deadline, current_deadline, deadline, fan_out, optional


async def test_in_force_is_inherited_and_reset() -> None:
    """Code in the block and its tasks see the deadline; after the block, nothing does."""
    mine = Deadline.after(30.0)

    async def seen() -> Deadline | None:
        return current_deadline()

    with mine.in_force() as effective:
        assert effective is mine
        assert await asyncio.create_task(seen()) is mine
    assert current_deadline() is None


async def test_in_force_keeps_the_outer_deadline_if_sooner() -> None:
    """A later deadline cannot extend the one in force; a sooner one replaces it."""
    async with deadline(5.0) as outer:
        with Deadline.after(60.0).in_force() as effective:
            assert effective is outer
        sooner = Deadline.after(1.0)
        with sooner.in_force() as effective:
            assert effective is sooner
        assert current_deadline() is outer


async def test_fan_out_ends_by_the_deadline_in_force() -> None:
    """A deadline that started earlier (at a request's arrival) bounds fan_out's ``within``."""
    never = asyncio.Event()

    with Deadline.after(0.0).in_force():  # the whole budget already spent upstream
        result = await fan_out(
            optional("slow", never.wait, fallback=None),
            within=30.0,
        )
    assert result.degraded == ("slow",)
    assert result.reasons["slow"] == "timeout"
