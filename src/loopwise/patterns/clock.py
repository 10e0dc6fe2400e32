"""Time as a seam: code that waits takes a :class:`Clock` so tests can skip the waiting.

    policy = RetryPolicy(on=ConnectionError, clock=fake)   # fake.sleep() only advances now()

The default :class:`LoopClock` reads the running event loop's clock, the same one
:mod:`loopwise.patterns.deadlines` uses, so waits and deadlines agree.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

__all__ = ["Clock", "LoopClock"]


class Clock(Protocol):
    """Monotonic seconds and a way to wait for them."""

    def now(self) -> float:
        """Seconds on a monotonic clock; only differences mean anything."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (cancellable)."""
        ...


class LoopClock:
    """The running event loop's clock (``loop.time()``) and ``asyncio.sleep``."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
