"""The check-loop plugin catches a loop held by blocking code, and only that."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
from blockbuster import BlockBuster

from tests.slow_callbacks import cpu_wait_clock, timing_steps


def _hold_the_loop() -> None:
    time.sleep(0.3)  # the point: a step that blocks the loop past the threshold


async def _blocking_step() -> None:
    _hold_the_loop()


async def _quick_steps() -> None:
    for _ in range(100):
        await asyncio.sleep(0)


def _run_timed(main: asyncio.Future[None] | object, cpu_wait: object) -> list[str]:
    seen: list[str] = []
    with timing_steps(lambda step, held: seen.append(step), cpu_wait):  # type: ignore[arg-type]
        asyncio.run(main, debug=True)  # type: ignore[arg-type]
    return seen


def test_a_blocking_step_is_reported(blockbuster: BlockBuster) -> None:
    """A task step that sleeps 0.3 s on the loop is reported, by name."""
    blockbuster.functions["time.sleep"].can_block_in(__file__, "_hold_the_loop")
    with cpu_wait_clock() as cpu_wait:
        seen = _run_timed(_blocking_step(), cpu_wait)
    assert len(seen) == 1
    assert "_blocking_step" in seen[0]


def test_quick_steps_are_not_reported() -> None:
    """A hundred short steps report nothing."""
    with cpu_wait_clock() as cpu_wait:
        assert _run_timed(_quick_steps(), cpu_wait) == []


def test_time_spent_waiting_for_a_cpu_is_not_the_steps(blockbuster: BlockBuster) -> None:
    """A step during which the kernel kept the thread off the CPU is not blamed for it.

    The scheduler is outside the test's control, so its account is simulated: it reports
    the step's whole 0.3 s as spent waiting for a CPU.
    """
    blockbuster.functions["time.sleep"].can_block_in(__file__, "_hold_the_loop")
    parked = iter([0.0, 0.3] * 10)
    assert _run_timed(_blocking_step(), lambda: next(parked)) == []


@pytest.mark.skipif(sys.platform != "linux", reason="the CPU-wait clock reads Linux's /proc")
def test_cpu_wait_clock_reads_this_threads_run_queue_time() -> None:
    """On Linux the clock is the kernel's: a number of seconds that never goes back."""
    with cpu_wait_clock() as cpu_wait:
        first = cpu_wait()
        sum(range(1_000_000))  # some CPU work, so the thread runs a few slices
        assert cpu_wait() >= first >= 0.0
