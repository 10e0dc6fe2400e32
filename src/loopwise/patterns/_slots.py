"""One FIFO hand-off of a bounded number of slots, with a bounded wait.

Every bound that makes callers wait in line is this one primitive: the per-key concurrency
of :mod:`loopwise.patterns.limits`, the workers of :mod:`loopwise.patterns.offload`, and the
service's admission gate (trio keeps one ``ParkingLot`` under its locks and semaphores for
the same reason: the subtle part is written, and tested, once).

    slots = Slots(capacity=10)
    if not slots.try_take() and not await slots.take(until=wait_until(max_wait)):
        ...                  # no slot by then: shed
    try:
        ...
    finally:
        slots.release()      # to the oldest waiter, or back to the free slots

A released slot is handed straight to the oldest waiter, so while anyone waits ``in_use``
stays at ``capacity`` and a newcomer cannot barge past the queue. All of it runs on the
event loop's thread: plain attributes, no lock, no ``await`` between a check and its update.
"""

from __future__ import annotations

import asyncio
from collections import deque

from loopwise.patterns.deadlines import DEADLINE_MARGIN, current_deadline

__all__ = ["Slots", "wait_until"]


def wait_until(max_wait: float | None = None, *, margin: float = DEADLINE_MARGIN) -> float | None:
    """The loop time by which a wait in line must give up; None for no bound.

    That is ``margin`` before the deadline in force, or ``max_wait`` from now if sooner.
    """
    until = None if max_wait is None else asyncio.get_running_loop().time() + max_wait
    in_force = current_deadline()
    if in_force is not None:
        by_deadline = in_force.at - margin
        until = by_deadline if until is None else min(until, by_deadline)
    return until


class Slots:
    """``capacity`` slots (None: unbounded) and a FIFO line of callers waiting for one."""

    __slots__ = ("_idle", "_waiters", "capacity", "in_use")

    def __init__(self, capacity: int | None) -> None:
        self.capacity = capacity
        # Invariant: 0 <= in_use, and in_use <= capacity except after capacity was lowered.
        self.in_use = 0
        # Futures of waiting callers, oldest first; each resolves True when handed a slot,
        # False when its time ran out or the line was refused.
        self._waiters: deque[asyncio.Future[bool]] = deque()
        self._idle: asyncio.Future[None] | None = None

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_take(self) -> bool:
        """Take a free slot now if there is one and nobody is waiting for it."""
        if self._waiters or (self.capacity is not None and self.in_use >= self.capacity):
            return False
        self.in_use += 1
        return True

    async def take(self, until: float | None) -> bool:
        """Wait in line until loop time ``until``: True once holding a slot, False if not.

        A caller cancelled in the very instant it was handed a slot passes the slot on
        before the cancellation propagates; otherwise the slot would leak.
        """
        if self.try_take():
            return True
        loop = asyncio.get_running_loop()
        if until is not None and until <= loop.time():
            return False
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        timer = None if until is None else loop.call_at(until, self._expire, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release()
            else:
                self._leave(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def release(self) -> None:
        """Give a slot back: to the oldest waiter, else to the free slots."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)  # the slot passes on; in_use is unchanged
                return
        self.in_use -= 1
        if self.in_use == 0 and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    def refuse_waiting(self) -> None:
        """End every wait now with False (the owner is draining or closing)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(False)

    async def wait_idle(self) -> None:
        """Return once no slot is in use."""
        if self.in_use == 0:
            return
        if self._idle is None or self._idle.done():
            self._idle = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._idle)

    def _expire(self, waiter: asyncio.Future[bool]) -> None:
        if not waiter.done():
            waiter.set_result(False)
            self._leave(waiter)

    def _leave(self, waiter: asyncio.Future[bool]) -> None:
        # A release in the same instant may have passed this (already done) waiter over
        # and dropped it from the line: then there is nothing left to remove. The oldest
        # leave first, so the search ends near the left end.
        if waiter in self._waiters:
            self._waiters.remove(waiter)
