"""A clock whose sleeps return at once and only move its own time forward."""

from __future__ import annotations

import asyncio

__all__ = ["FakeClock"]


class FakeClock:
    """Satisfies ``loopwise.patterns.clock.Clock``; records every sleep."""

    def __init__(self, start: float = 1000.0) -> None:
        self.time = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time += seconds
        await asyncio.sleep(0)  # still a checkpoint, like a real sleep

    def advance(self, seconds: float) -> None:
        self.time += seconds
