"""Drain before stopping: on SIGTERM, fail readiness for a while, keep serving, then stop.

    drain = Drain(delay=settings.drain_delay)     # lifespan, in a server worker
    async with drain.handling_sigterm():           # SIGTERM now starts the drain
        ...
    drain.draining                                 # /readyz answers 503 while True

Why. A load balancer keeps sending an instance new connections until its health check
fails ``fall`` times in a row (HAProxy: ``inter 1s fall 2`` in ``deploy/haproxy``), and
Kubernetes takes a Pod out of its Service's endpoints only after every node's proxy has
heard of the deletion. An instance that stops accepting the moment it is told to stop
turns that window into refused connections: accepted-queue connections are dropped
unread (README, "Shutting down"). Draining first makes the window harmless: for
``LOOPWISE_DRAIN_DELAY`` seconds ``/readyz`` answers 503 while everything else is served
as before, so the balancer takes the instance out of rotation on its own schedule; only
then does the server stop accepting and finish what it admitted.

How it meets granian (2.8, ``granian/server/mp.py`` and ``_signals.py``, read for this):
the main process answers SIGTERM by closing its copy of the listening socket and sending
SIGTERM to each worker, then waits ``workers_kill_timeout`` for them; each worker's event
loop has a SIGTERM/SIGINT handler that stops its Rust acceptor at once and then runs the
ASGI lifespan's shutdown. The lifespan starts after granian installs that handler, so
:meth:`Drain.handling_sigterm` replaces the SIGTERM one on the worker's loop: the worker
keeps its listener (its own copy of the socket) and serves during the delay, then sends
itself SIGINT, whose handler is still granian's: the ordinary stop follows. A second
SIGTERM during the delay stops at once (an operator who insists). The CLI stretches
``workers_kill_timeout`` to cover the delay and the shutdown grace. A test runs ``serve``
as a real process and checks each step, so a granian that changes this fails loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable

from loopwise.service.logs import get_logger

__all__ = ["Drain"]

_log = get_logger("loopwise.drain")


def _interrupt_self() -> None:
    # granian's own handler (still installed for SIGINT) stops the acceptor and the loop.
    os.kill(os.getpid(), signal.SIGINT)


class Drain:
    """One process's drain: a flag for ``/readyz`` and a timer that ends it.

    Args:
        delay: seconds between SIGTERM and the stop; 0 stops at once (as without a drain).
        stop: what ends the drain; by default SIGINT to this process (granian's stop).

    Raises:
        ValueError: ``delay`` is negative.
    """

    def __init__(self, *, delay: float, stop: Callable[[], None] = _interrupt_self) -> None:
        if delay < 0:
            raise ValueError("`delay` must not be negative")
        self.delay = delay
        self._stop = stop
        self._timer: asyncio.TimerHandle | None = None
        self._began: float | None = None
        self._stopped = False

    @property
    def draining(self) -> bool:
        """True from the first SIGTERM on: the instance is leaving rotation."""
        return self._began is not None

    def begin(self) -> None:
        """Start draining (the SIGTERM handler); a second call stops at once."""
        if self._began is not None:
            _log.info("drain_cut_short", after=round(time.monotonic() - self._began, 3))
            self._finish()
            return
        self._began = time.monotonic()
        _log.info("draining", delay=self.delay)
        if self.delay == 0:
            self._finish()
        else:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self._finish)

    def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if not self._stopped:
            self._stopped = True
            _log.info("drain_done_stopping")
            self._stop()

    @contextlib.asynccontextmanager
    async def handling_sigterm(self) -> AsyncIterator[Drain]:
        """Make SIGTERM start the drain on the running loop, until the block exits."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.begin)
        try:
            yield self
        finally:
            if self._timer is not None:
                self._timer.cancel()
            # By now granian's serving is over; SIGTERM goes back to its default action.
            loop.remove_signal_handler(signal.SIGTERM)
