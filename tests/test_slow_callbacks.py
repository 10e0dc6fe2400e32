"""The check-loop plugin catches a loop held by blocking code, and only that."""

from __future__ import annotations

import asyncio
import logging
import time

from blockbuster import BlockBuster

from tests.slow_callbacks import _SlowCallbacks


def _hold_the_loop() -> None:
    time.sleep(0.3)  # the point: a step that blocks the loop past the threshold


async def _blocking_step() -> None:
    _hold_the_loop()


def test_a_blocking_step_is_reported(blockbuster: BlockBuster) -> None:
    """In debug mode, a task step that sleeps 0.3 s on the loop is recorded."""
    blockbuster.functions["time.sleep"].can_block_in(__file__, "_hold_the_loop")
    handler = _SlowCallbacks()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        asyncio.run(_blocking_step(), debug=True)
    finally:
        logger.removeHandler(handler)
    assert len(handler.seen) == 1
    assert "_blocking_step" in handler.seen[0]


def test_debug_noise_below_the_threshold_is_ignored() -> None:
    """asyncio's own 0.1 s warnings under the 0.25 s threshold do not count."""
    handler = _SlowCallbacks()
    for took in ("0.120", "0.249", "0.250", "1.500"):
        record = logging.LogRecord(
            "asyncio",
            logging.WARNING,
            __file__,
            1,
            f"Executing <Handle x> took {took} seconds",
            None,
            None,
        )
        handler.emit(record)
    assert [m.split(" took ")[1] for m in handler.seen] == ["0.250 seconds", "1.500 seconds"]
