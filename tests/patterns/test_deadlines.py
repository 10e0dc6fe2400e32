"""Deadlines: fail_after raises, move_on_after gives up quietly, in_force is inherited.

On virtual time: each deadline ends exactly when it says, and no test really waits.
"""

from __future__ import annotations

import asyncio

import pytest

from loopwise.patterns import (
    Deadline,
    DeadlineExceeded,
    current_deadline,
    fail_after,
    fan_out,
    move_on_after,
    optional,
    or_fallback,
    time_left,
)

pytestmark = pytest.mark.virtual_time


async def test_fail_after_raises_at_the_deadline() -> None:
    """`fail_after` cancels the block when its time is up and raises DeadlineExceeded."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DeadlineExceeded) as caught:
        async with fail_after(0.25):
            await asyncio.Event().wait()
    assert loop.time() - started == pytest.approx(0.25, abs=1e-9)
    assert caught.value.budget == 0.25
    assert isinstance(caught.value, TimeoutError)


async def test_move_on_after_gives_up_quietly() -> None:
    """`move_on_after` ends the block at its deadline without raising; `expired` says so."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with move_on_after(1.5) as scope:
        await asyncio.Event().wait()
    assert scope.expired
    assert loop.time() - started == pytest.approx(1.5, abs=1e-9)
    async with move_on_after(1.5) as scope:
        await asyncio.sleep(1.0)
    assert not scope.expired


async def test_nested_deadlines_cannot_extend_the_outer() -> None:
    """A nested `fail_after` ends at the outer deadline when that is sooner."""
    loop = asyncio.get_running_loop()
    seen: list[float | None] = []

    async def nested() -> None:
        async with fail_after(0.5):
            await asyncio.sleep(0.2)
            async with fail_after(10.0):
                seen.append(time_left())
                await asyncio.Event().wait()

    started = loop.time()
    with pytest.raises(DeadlineExceeded):
        await nested()
    assert loop.time() - started == pytest.approx(0.5, abs=1e-9)
    assert seen == [pytest.approx(0.3, abs=1e-9)]


async def test_or_fallback_turns_only_the_deadline_into_the_fallback() -> None:
    """`or_fallback` returns the fallback when time runs out, and lets other errors through."""
    assert await or_fallback(asyncio.sleep(5.0, "late"), within=1.0, fallback="fb") == "fb"
    assert await or_fallback(asyncio.sleep(0.5, "on time"), within=1.0, fallback="fb") == "on time"

    async def broken() -> str:
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        await or_fallback(broken(), within=1.0, fallback="fb")


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
    async with fail_after(5.0) as outer:
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
