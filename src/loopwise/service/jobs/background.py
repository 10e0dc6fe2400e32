"""Best-effort background work that may be lost: a cache warm-up, a metrics flush.

    async with BackgroundWork(grace=5.0) as background:
        background.spawn(warm_cache, user_id, name="warm-cache")

Work that must not be lost is a job (``enqueue``), not this. What this gives over a bare
``create_task``: every task has an owner that waits for it, an exception is logged rather
than lost (and never cancels siblings), and shutdown drains running tasks within ``grace``
seconds before cancelling the rest.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVarTuple, Unpack

from loopwise.patterns.exceptions import ResourceClosed
from loopwise.patterns.lifecycle import AsyncResource, ResourceState
from loopwise.service.logs import get_logger

__all__ = ["BackgroundStats", "BackgroundWork"]

Ts = TypeVarTuple("Ts")

_log = get_logger("loopwise.background")


@dataclass(frozen=True, slots=True)
class BackgroundStats:
    running: int
    completed: int
    failed: int
    cancelled: int


class BackgroundWork(AsyncResource):
    """A task group owned by the app for fire-and-forget work, drained on shutdown."""

    def __init__(self, *, grace: float = 5.0) -> None:
        if grace < 0:
            raise ValueError(f"`grace` must not be negative, got {grace}")
        self._grace = grace
        self._tg = asyncio.TaskGroup()
        self._tasks: set[asyncio.Task[None]] = set()
        self._completed = self._failed = self._cancelled = 0

    def stats(self) -> BackgroundStats:
        return BackgroundStats(len(self._tasks), self._completed, self._failed, self._cancelled)

    def spawn(self, func: Callable[[Unpack[Ts]], Awaitable[object]], *args: *Ts, name: str) -> None:
        """Run ``func(*args)`` in the background; its failure is logged, not raised.

        Raises:
            ResourceClosed: before ``__aenter__`` or once shutdown has begun.
        """
        if self.state is not ResourceState.OPENED:
            raise ResourceClosed(
                self.resource_name, f"cannot spawn {name!r}: background work is closed"
            )
        task = self._tg.create_task(self._guard(func, args, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(
        self, func: Callable[[Unpack[Ts]], Awaitable[object]], args: tuple[*Ts], name: str
    ) -> None:
        try:
            await func(*args)
        except asyncio.CancelledError:
            self._cancelled += 1
            raise
        except Exception as exc:  # best effort: log it, keep the siblings and the app running
            self._failed += 1
            # Frames as file:line, not a formatted traceback: that reads source files
            # (linecache), which would block the event loop.
            where = [
                f"{frame.f_code.co_filename}:{line} {frame.f_code.co_name}"
                for frame, line in traceback.walk_tb(exc.__traceback__)
            ]
            _log.error("background_task_failed", task=name, error=repr(exc), where=where[-5:])
        else:
            self._completed += 1

    @property
    def resource_name(self) -> str:
        return "background work"

    async def _aopen(self) -> None:
        await self._tg.__aenter__()

    async def _aclose(self) -> None:
        """Refuse new work, wait ``grace`` seconds for running tasks, cancel the rest."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self._grace)
        for task in list(self._tasks):
            task.cancel()
        await self._tg.__aexit__(None, None, None)
