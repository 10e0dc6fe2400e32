"""LISTEN on a PostgreSQL connection of its own, for as long as the app runs.

    listener = PgListener(dsn, ["loopwise_sessions"], on_notify=handle, on_listening=ready,
                          on_lost=forget_everything, name="sessions")
    async with listener:           # returns at once; connects and reconnects in a task
        ...

PostgreSQL delivers a notification only to sessions that were listening when it was
committed, so a listener that was down may have missed some: ``on_lost`` runs as soon as
the connection is known to be gone (before any reconnect), and ``on_listening`` each time
LISTEN is in force again, so the owner can treat the gap as "anything may have changed".

A dead peer does not always close the socket (a partition, a frozen host), so the
connection is also pinged every ``ping_interval``; a ping that fails or misses its
deadline counts as a lost connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import asyncpg

from loopwise.patterns.lifecycle import AsyncResource
from loopwise.service.logs import get_logger

__all__ = ["PgListener"]

_log = get_logger("loopwise.listener")


class PgListener(AsyncResource):
    """One dedicated LISTEN connection, reconnected after ``retry_interval`` when lost."""

    def __init__(
        self,
        dsn: str,
        channels: Sequence[str],
        *,
        on_notify: Callable[[str, str], None],
        on_listening: Callable[[], None] = lambda: None,
        on_lost: Callable[[], None] = lambda: None,
        name: str,
        retry_interval: float = 1.0,
        ping_interval: float = 5.0,
    ) -> None:
        if not channels:
            raise ValueError("`channels` must name at least one channel")
        self._dsn = dsn
        self._channels = tuple(channels)
        self._on_notify = on_notify
        self._on_listening = on_listening
        self._on_lost = on_lost
        self._name = name
        self._retry = retry_interval
        self._ping = ping_interval
        self._task: asyncio.Task[None] | None = None
        self._listening = False

    @property
    def listening(self) -> bool:
        """Whether LISTEN is in force right now (notifications are being received)."""
        return self._listening

    @property
    def resource_name(self) -> str:
        return f"listener {self._name!r}"

    async def _aopen(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"listen-{self._name}")

    async def _aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self._listen_once()
            # InternalClientError: asyncpg's own state error when the server ended the
            # connection mid-ping (seen under load after pg_terminate_backend). Escaping,
            # it ended this loop for good with `listening` still true.
            except (
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.exceptions.InternalClientError,
                TimeoutError,
            ) as exc:
                _log.warning("listener_failed", listener=self._name, error=repr(exc))
            finally:
                if self._listening:  # whatever ended it, cancellation included
                    self._listening = False
                    self._on_lost()
            await asyncio.sleep(self._retry)

    async def _listen_once(self) -> None:
        conn = await asyncpg.connect(
            self._dsn,
            timeout=10,
            server_settings={"application_name": f"loopwise-listen-{self._name}"},
        )
        try:
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn: lost.set())
            for channel in self._channels:
                await conn.add_listener(channel, self._deliver)
            self._listening = True
            self._on_listening()
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), self._ping)
                if not lost.is_set():
                    await conn.execute("SELECT 1", timeout=self._ping)
            _log.warning("listener_lost", listener=self._name)
        finally:
            conn.terminate()  # synchronous: safe while being cancelled

    def _deliver(self, _conn: object, _pid: int, channel: str, payload: object) -> None:
        self._on_notify(channel, str(payload))
