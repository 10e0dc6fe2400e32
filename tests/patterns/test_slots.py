"""The one FIFO slot hand-off under limits, pools and the admission gate."""

from __future__ import annotations

import asyncio

import pytest

from loopwise.patterns._slots import Slots, wait_until
from loopwise.patterns.deadlines import DEADLINE_MARGIN, fail_after

pytestmark = pytest.mark.virtual_time


async def test_a_freed_slot_goes_to_the_oldest_waiter() -> None:
    """Waiters get slots first come, first served; in_use never passes the capacity."""
    slots = Slots(1)
    assert slots.try_take()
    order: list[int] = []

    async def waiter(n: int) -> None:
        assert await slots.take(None)
        order.append(n)
        slots.release()

    async with asyncio.TaskGroup() as group:
        for n in range(3):
            group.create_task(waiter(n))
        await asyncio.sleep(0)
        assert (slots.in_use, slots.waiting) == (1, 3)
        assert not slots.try_take()  # a newcomer cannot barge past the line
        slots.release()
    assert order == [0, 1, 2]
    assert (slots.in_use, slots.waiting) == (0, 0)


async def test_a_wait_ends_exactly_at_its_time() -> None:
    """No slot by `until`: False, at that loop time exactly, and out of the line."""
    slots = Slots(1)
    assert slots.try_take()
    loop = asyncio.get_running_loop()
    until = loop.time() + 0.3
    assert await slots.take(until) is False
    assert loop.time() == until
    assert slots.waiting == 0


async def test_cancelled_in_the_instant_it_was_handed_a_slot_passes_it_on() -> None:
    """A waiter cancelled just as the slot reached it gives it to the next: none leaks."""
    slots = Slots(1)
    assert slots.try_take()
    first = asyncio.create_task(slots.take(None))
    second = asyncio.create_task(slots.take(None))
    await asyncio.sleep(0)
    slots.release()  # hands the slot to `first`...
    first.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second is True
    assert (slots.in_use, slots.waiting) == (1, 0)


async def test_refusing_the_line_and_waiting_for_idle() -> None:
    """`refuse_waiting` ends every wait with False; `wait_idle` returns at the last release."""
    slots = Slots(1)
    assert slots.try_take()
    waiting = asyncio.create_task(slots.take(None))
    await asyncio.sleep(0)
    slots.refuse_waiting()
    assert await waiting is False
    idle = asyncio.create_task(slots.wait_idle())
    await asyncio.sleep(1.0)
    assert not idle.done()
    slots.release()
    await idle
    assert slots.in_use == 0


async def test_wait_until_is_the_margin_before_the_deadline_or_max_wait() -> None:
    """The bound is `margin` before the deadline in force, or `max_wait` if sooner."""
    loop = asyncio.get_running_loop()
    now = loop.time()
    assert wait_until() is None
    assert wait_until(2.0) == now + 2.0
    async with fail_after(1.0):
        assert wait_until() == pytest.approx(now + 1.0 - DEADLINE_MARGIN, abs=1e-9)
        assert wait_until(0.5) == now + 0.5
        assert wait_until(margin=0.1) == pytest.approx(now + 0.9, abs=1e-9)
