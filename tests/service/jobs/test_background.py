"""Best-effort background work: owned, logged on failure, drained on shutdown."""

from __future__ import annotations

import asyncio

import pytest

from loopwise.service.jobs.background import BackgroundWork, ClosedBackgroundWork


async def test_work_runs_and_failures_stay_contained() -> None:
    """A failing task is counted and logged; its siblings and the owner carry on."""
    done = asyncio.Event()

    async def fails() -> None:
        raise RuntimeError("cache unreachable")

    async def succeeds(event: asyncio.Event) -> None:
        event.set()

    async with BackgroundWork(grace=1) as background:
        background.spawn(fails, name="warm-cache")
        background.spawn(succeeds, done, name="flush")
        await done.wait()
    stats = background.stats()
    assert (stats.running, stats.completed, stats.failed, stats.cancelled) == (0, 1, 1, 0)


async def test_shutdown_drains_then_cancels() -> None:
    """Closing waits for running work within the grace, then cancels what is left."""
    quick, slow, started = asyncio.Event(), asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    async def task(name: str, gate: asyncio.Event) -> None:
        started.set()
        await gate.wait()
        finished.append(name)

    background = BackgroundWork(grace=0.2)
    async with background:
        background.spawn(task, "quick", quick, name="quick")
        background.spawn(task, "slow", slow, name="slow")
        await started.wait()
        asyncio.get_running_loop().call_soon(quick.set)
    assert finished == ["quick"]
    assert background.stats().cancelled == 1


async def test_closed_background_work_refuses() -> None:
    """No work is accepted before start or after close, and it cannot be reopened."""
    background = BackgroundWork()
    with pytest.raises(ClosedBackgroundWork, match="cannot spawn 'x'"):
        background.spawn(asyncio.sleep, 0, name="x")
    async with background:
        pass
    with pytest.raises(ClosedBackgroundWork):
        background.spawn(asyncio.sleep, 0, name="x")
    with pytest.raises(ClosedBackgroundWork, match="Cannot reopen"):
        await background.__aenter__()
    with pytest.raises(ValueError, match="`grace` must not be negative"):
        BackgroundWork(grace=-1)
