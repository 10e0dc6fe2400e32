"""An httpx transport whose connection pool survives cancelled calls (httpx #1461).

    transport = CancelSafeTransport(limits=httpx.Limits(max_connections=10))
    async with httpx.AsyncClient(transport=transport) as client:
        ...   # cancel calls at will: no pool slot is lost

Deadlines end HTTP calls by cancelling them, and httpcore 1.0.9 (the newest) loses a pool
slot when that happens at the wrong moment. Measured here: after the overview benchmark's
overloaded closed-loop runs, every slot of a 256-connection pool was held by connections
no request owned, so each later call waited for a slot until its deadline, against a
healthy downstream that saw no request at all (and queued requests made each pool update
cost O(requests x connections) of CPU). The connection left behind is one of:

- ``CONNECTING`` or ``NEW``: the request was cancelled after the pool handed it a new
  connection and before it used it (httpcore issue 1093; fixes pending in pulls 1094 and
  1099). Nothing of it is idle, closed, expired or available, so nothing reclaims it.
- ``ACTIVE``: httpcore's clean-up after a cancellation sits behind an anyio shield, which
  does not stop a *second* native ``task.cancel()``; nested deadlines ending a moment
  apart deliver exactly that, and the clean-up stops half way.

In every case the request is gone from the pool and its connection is not idle. The pool
here closes such connections each time it assigns connections (whenever a request comes
or goes): a connection is in use only while a request in the pool holds it.

Only plain connection pools are guarded; a transport through a proxy is left as httpx
builds it. Environment proxies (``HTTP_PROXY``) are not used by a client given an explicit
transport: a downstream is named in settings, its route should be too.
"""

from __future__ import annotations

from typing import Any

import httpcore
import httpx

__all__ = ["CancelSafeTransport"]


class _ReapingPool(httpcore.AsyncConnectionPool):
    """An httpcore pool that closes orphaned connections and hands one out once per request.

    The whole assignment pass is restated because httpcore's does two things wrong at once
    for a pool under steady load: it leaves orphans alone (above), and it hands an idle
    HTTP/1.1 connection to *every* request queued in the same pass, since the connection
    stays idle until the first of them wakes up and starts on it. The others then fail
    with ``ConnectionNotAvailable`` inside the pool and go round again (httpcore issue
    822, pull 1035; issue 1110 for closing such a connection). Measured: fetching 1,000
    URLs ten at a time, the pool made 9.2 attempts per request and a pass per attempt
    (``python -m cProfile``: 9,220 connection attempts, 4,610 passes), most of the
    client's CPU.
    """

    def _assign_requests_to_connections(self) -> list[Any]:
        # A connection is in use only while a request in `_requests` holds it; one that is
        # neither idle nor closed and held by none was abandoned mid-way and is never
        # reused. Closing it here is safe: no task is inside it (its request is gone).
        held = {id(r.connection) for r in self._requests if r.connection is not None}
        closing: list[Any] = []
        idle = 0
        for connection in list(self._connections):
            if connection.is_closed():
                self._connections.remove(connection)
                continue
            free = id(connection) not in held
            expired = free and connection.has_expired()
            orphan = free and not expired and not connection.is_idle()
            surplus = free and connection.is_idle() and idle >= self._max_keepalive_connections
            if expired or orphan or surplus:
                self._connections.remove(connection)
                closing.append(connection)
            elif free:
                idle += 1
        for request in [r for r in self._requests if r.is_queued()]:
            chosen = self._connection_for(request.request.url.origin, held, closing)
            if chosen is None:
                continue  # the pool is full of busy connections: it waits for the next pass
            request.assign_to_connection(chosen)
            held.add(id(chosen))
        return closing

    def _connection_for(
        self, origin: httpcore.Origin, held: set[int], closing: list[Any]
    ) -> Any | None:
        """An available connection, a new one, or a new one in an idle one's place."""
        for connection in self._connections:
            # Only HTTP/2 carries several requests: an HTTP/1.1 connection handed to a
            # request is taken even while it still reads as available.
            shared = id(connection) in held and not self._http2
            if not shared and connection.can_handle_request(origin) and connection.is_available():
                return connection
        if len(self._connections) >= self._max_connections:
            idle = [c for c in self._connections if id(c) not in held and c.is_idle()]
            if not idle:
                return None
            self._connections.remove(idle[0])
            closing.append(idle[0])
        connection = self.create_connection(origin)
        self._connections.append(connection)
        return connection


class CancelSafeTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` whose pool reclaims connections cancellation orphaned.

    Takes the same arguments as ``httpx.AsyncHTTPTransport``.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Same state, one method more: switching the class keeps every argument httpx
        # passed to the pool (TLS context, socket options, limits) without restating them.
        if type(self._pool) is httpcore.AsyncConnectionPool:
            self._pool.__class__ = _ReapingPool

    @property
    def connections(self) -> list[httpcore.AsyncConnectionInterface]:
        """The pool's connections now (each says ``is_idle()``, ``is_closed()``...)."""
        return self._pool.connections
