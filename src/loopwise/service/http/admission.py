"""Admission control: a bound on requests in flight per process; the excess gets 503 at once.

    gate = Admission(limit=settings.max_in_flight)
    app.add_middleware(AdmissionControl, gate=gate)   # outermost: sheds before anything runs
    ...
    await gate.drain(settings.shutdown_grace)  # lifespan exit, before pools close

Why here and not in the server. Past saturation a request that cannot be served soon only
waits: measured on 2 cores, every request granian accepted went straight into the app and
queued on the database pool (503 after exactly ``LOOPWISE_DB_ACQUIRE_TIMEOUT``) and on the
event loop, p99 growing with the connection count (0.4 s at 256, 1.7 s at 1,024). A bound
at the door keeps that queue short: a request either starts now or is told at once,
with ``Retry-After``, to come back, and the process keeps the CPU for the requests it took.

The limit counts requests, not connections: idle keep-alive connections cost the app
nothing (granian holds them), so its connection cap is set far above this one.

Probes and the scrape (``/healthz``, ``/readyz``, ``/metrics``) bypass the gate: an
operator must see a saturated process answer, not be shed with the traffic. A shed request
is answered without reading its body, and not access-logged (one line per shed would cost
the CPU shedding saves): ``loopwise_http_requests_shed_total`` counts them.

At shutdown granian runs the lifespan's exit while admitted requests are still running;
:meth:`Admission.drain` sheds new requests and waits for those in flight, so none of them
meets a pool that has just been closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import NamedTuple

from starlette.types import ASGIApp, Receive, Scope, Send

from loopwise.patterns._slots import Slots
from loopwise.service.http.problems import MEDIA_TYPE, problem_body

__all__ = ["EXEMPT_PATHS", "Admission", "AdmissionControl", "AdmissionStats"]

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class AdmissionStats(NamedTuple):
    in_flight: int
    queued: int
    shed: int


class Admission:
    """The per-process gate: requests in flight, a bounded queue of waiting ones, the count shed.

    The slots are the toolkit's one FIFO hand-off (``loopwise.patterns._slots``), the same
    as under every limit and pool: no lock (the event loop is one thread, and the
    middleware's check and take run with no ``await`` between them); a released slot passes
    straight to the oldest waiter, so while anyone waits ``in_flight`` stays at ``limit``
    and a newcomer cannot barge past the queue.

        Admission(limit=128)                          # 128 at once, the rest shed at once
        Admission(limit=128, queue=4096, wait=0.5)    # the rest wait up to 0.5 s for a slot

    Args:
        limit: requests admitted at once; must be positive.
        queue: requests that may wait for a slot; past it, shed at once.
        wait: seconds a request may wait for a slot before it is shed.
        retry_after: seconds, sent as ``Retry-After`` with every shed answer.

    Raises:
        ValueError: a bound is out of range.
    """

    def __init__(
        self, *, limit: int, queue: int = 0, wait: float = 0.0, retry_after: int = 1
    ) -> None:
        if limit < 1:
            raise ValueError("`limit` must be positive")
        if queue < 0 or wait < 0:
            raise ValueError("`queue` and `wait` must not be negative")
        if retry_after < 1:
            raise ValueError("`retry_after` must be positive")
        self.queue = queue if wait > 0 else 0
        self.wait = wait
        self.retry_after = retry_after
        self.shed = 0  # requests answered 503 by the gate since the process started
        self.draining = False
        self._slots = Slots(limit)

    @property
    def limit(self) -> int:
        capacity = self._slots.capacity
        assert capacity is not None  # made bounded, and only ever lowered to 0
        return capacity

    @property
    def in_flight(self) -> int:
        return self._slots.in_use

    @property
    def queued(self) -> int:
        return self._slots.waiting

    def try_enter(self) -> bool:
        """Take a free slot now, if there is one; the hot path, no waiting."""
        return self._slots.try_take()

    def stats(self) -> AdmissionStats:
        """What the gate holds now, and how many it has shed: for metrics."""
        return AdmissionStats(self.in_flight, self.queued, self.shed)

    async def wait_for_slot(self) -> bool:
        """Wait, within the bounds, for a slot; True once holding one, False when shed."""
        if self.draining or self._slots.waiting >= self.queue:
            return False
        return await self._slots.take(asyncio.get_running_loop().time() + self.wait)

    def leave(self) -> None:
        """Give a slot back: to the oldest waiter, else to the pool of free slots."""
        self._slots.release()

    async def drain(self, grace: float) -> bool:
        """Shed every new and waiting request; wait up to ``grace`` s for those in flight.

        Returns:
            True when none is left in flight, False when the grace period ran out first.
        """
        self.draining = True
        # New requests fail the hot path's one check and are shed; so are the waiting.
        self._slots.capacity = 0
        self._slots.refuse_waiting()
        try:
            async with asyncio.timeout(grace):
                await self._slots.wait_idle()
        except TimeoutError:
            return False
        return True


class AdmissionControl:
    """Pure ASGI middleware: admit up to ``gate.limit`` requests; answer the rest 503.

    The answer is RFC 9457 problem+json with ``Retry-After``, sent before anything else
    of the app runs and without reading the request body.
    """

    def __init__(self, app: ASGIApp, *, gate: Admission, exempt: Iterable[str] = EXEMPT_PATHS):
        self.app = app
        self._gate = gate
        self._exempt = frozenset(exempt)
        body = problem_body(503, "The service is at capacity; retry shortly.")
        self._headers: list[tuple[bytes, bytes]] = [
            (b"content-type", MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(gate.retry_after).encode()),
        ]
        self._body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gate = self._gate
        if scope["type"] != "http" or scope["path"] in self._exempt:
            await self.app(scope, receive, send)
            return
        if not gate.try_enter() and not await gate.wait_for_slot():
            gate.shed += 1
            # Fresh messages: a server may add to what it is given.
            await send({"type": "http.response.start", "status": 503, "headers": [*self._headers]})
            await send({"type": "http.response.body", "body": self._body})
            return
        try:
            await self.app(scope, receive, send)
        finally:
            gate.leave()
