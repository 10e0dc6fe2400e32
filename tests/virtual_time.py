"""Virtual time for timing tests: asyncio's loop, with a clock that jumps when all wait.

    @pytest.mark.virtual_time
    async def test_backoff() -> None:
        await asyncio.sleep(3600)          # returns at once...
        assert loop.time() == start + 3600  # ...an hour later, on the loop's clock

The loop is looptime's (nolar/looptime): when no callback is ready and no I/O arrives
within a few idle cycles, its clock moves straight to the next timer. Time is kept in
integer microseconds, so sums of intervals compare exactly. Everything in
``loopwise.patterns`` reads this clock (``loop.time()``), so deadlines, limits, GCRA
pacing, backoff and breakers all move together.

The test's loop comes from ``pytest_asyncio_loop_factories`` (``tests/conftest.py``), so the
whole test runs on it, fixtures included. looptime's own pytest plugin is switched off
(``-p no:looptime_plugin`` in ``pyproject.toml``): for every test, sync ones included, it
asks the loop policy for the current loop, and in a sync test that makes (and leaks) a new
loop, which ``filterwarnings = error`` turns into a failure of a later test.

What does not move with it: threads. A thread blocked on something the test controls is
fine (the clock jumps past it, as it should); a thread expected to finish *before* a timer
is a race on virtual time, so such tests stay on real time.
"""

from __future__ import annotations

import asyncio

import looptime

__all__ = ["virtual_time_loop"]


def virtual_time_loop() -> asyncio.AbstractEventLoop:
    """A new asyncio event loop on virtual time, its clock starting at 0."""
    return looptime.new_event_loop(start=0.0)
