"""A pytest plugin for ``scripts/check-loop``: fail any test whose loop ran a slow callback.

In debug mode (``PYTHONASYNCIODEBUG=1``) asyncio logs "Executing <Handle ...> took 0.150
seconds" for every callback or task step that held the loop longer than
``slow_callback_duration`` (0.1 s). That is a blocking call, or CPU work that belongs in a
pool; this plugin turns each such line into a test error naming the callback.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


class _SlowCallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing ") and " took " in message:
            self.seen.append(message)


@pytest.fixture(autouse=True)
def no_slow_callbacks() -> Iterator[None]:
    """Set up first, torn down last: covers the test and every fixture it uses."""
    handler = _SlowCallbacks()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    if handler.seen:
        pytest.fail("the event loop was blocked:\n" + "\n".join(handler.seen), pytrace=False)
