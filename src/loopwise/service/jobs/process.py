"""A worker process: what ``loopwise worker`` runs until SIGTERM or SIGINT.

Any number of these, on any number of machines, share one queue; PostgreSQL is the only
coordination. On the signal the worker stops claiming, lets running jobs finish within
``LOOPWISE_SHUTDOWN_GRACE`` and gives the rest back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Mapping

import asyncpg

from loopwise.service.db import Database
from loopwise.service.jobs.running import Handler
from loopwise.service.jobs.worker import Worker
from loopwise.service.logs import get_logger
from loopwise.service.settings import Settings
from loopwise.service.tracing import Tracing

__all__ = ["run_worker_process"]

_log = get_logger("loopwise.jobs")


HandlerFactory = Callable[[Settings, asyncpg.Pool], Mapping[str, Handler]]


async def run_worker_process(settings: Settings, dsn: str, handlers: HandlerFactory) -> None:
    """Run one worker on its own pool until SIGTERM or SIGINT, then stop gracefully.

    Args:
        handlers: builds the job handlers from the settings and the worker's pool (the
            CLI passes the account service's, ``accounts.emails.account_job_handlers``).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with (
            Tracing() if settings.otel_enabled else contextlib.nullcontext(),
            Database.from_settings(settings, dsn) as db,
            Worker.from_settings(
                settings, db.pool, handlers(settings, db.pool), settings.direct_dsn(dsn)
            ),
        ):
            await stop.wait()
            _log.info("worker_stopping")
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
