"""A pytest plugin for ``scripts/check-loop``: fail any test whose loop ran a slow callback.

In debug mode (``PYTHONASYNCIODEBUG=1``) asyncio logs "Executing <Handle ...> took 0.300
seconds" for every callback or task step that held the loop longer than
``slow_callback_duration``. That is a blocking call, or CPU work that belongs in a pool;
this plugin turns each such line into a test failure naming the callback.

The threshold is 0.25 s, not asyncio's 0.1 s: debug mode records a creation stack for every
task and handle, which makes each step several times slower than in production, and on a
shared 2-core machine ordinary steps then reach 0.1-0.15 s now and then. 0.25 s under debug
mode is roughly 50-80 ms of real time, still far below any blocking call worth catching
(a sleep, a synchronous HTTP request, an argon2 hash at production cost).

Only the test's call phase counts: the requests and the code under test. Fixture set-up
and tear-down (app start-up and shutdown, cloning a database) run once per process in
production, before it serves; debug mode's own bookkeeping (a creation traceback for every
task and handle) makes those steps several times slower than they are, enough to cross
0.1 s on a loaded machine. The watchdog covers start-up in production.
"""

from __future__ import annotations

import gc
import logging
import re
from collections.abc import Generator

import pytest


class _SlowCallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # asyncio logs every step over its own 0.1 s; only the slower ones count here.
        message = record.getMessage()
        took = _TOOK.search(message)
        if message.startswith("Executing ") and took and float(took[1]) >= SLOW_CALLBACK:
            self.seen.append(message)


SLOW_CALLBACK = 0.25  # seconds; see the module docstring
_TOOK = re.compile(r" took (\d+\.\d+) seconds")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    # Start from a collected heap: debug mode keeps a stack for every task and handle, so
    # a full collection can pause well past 0.1 s inside whichever step it lands in. That
    # is a pause, not blocking code; a blocking call still shows.
    gc.collect()
    handler = _SlowCallbacks()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    if handler.seen:
        pytest.fail("the event loop was blocked:\n" + "\n".join(handler.seen), pytrace=False)
