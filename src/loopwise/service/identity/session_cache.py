"""The sessions a process has seen, in memory, forgotten the moment PostgreSQL says so.

    async with SessionCache(dsn, ttl=30, max_entries=100_000) as sessions:   # lifespan
        caller = await sessions.find_caller(pool, token)    # None: unknown/expired/revoked
    SessionCache(dsn, ttl=30, max_entries=100_000, also=[documents])  # one LISTEN for both

Authentication is the one query on the hottest path (``GET /users/{id}``). A session
changes rarely (logout, a password or name change), so each process keeps the callers
it has loaded and asks PostgreSQL again only on a miss.

Consistency rule (docs/operations/sessions.md):

- Every change to a session or to a user's public fields is announced by a trigger on
  channel ``loopwise_auth`` (migration 0004) when its transaction commits, whoever
  made it. Each process applies the announcement as it arrives (on one LISTEN connection,
  which also carries the channels of the caches given in ``also``): a revoked token stops
  working on every instance within the notification's delivery time (milliseconds), and
  at once on the instance that revoked it (it also forgets locally before answering).
- Entries are used only while the LISTEN connection is up. When it drops, everything is
  forgotten and every lookup goes to PostgreSQL until LISTEN is in force again, so a
  change made during the gap cannot be missed.
- A load that raced with an announcement is not kept (a generation counter), so a
  row read just before a logout committed cannot outlive the logout.
- An entry lives at most ``ttl`` seconds and never past its session's expiry; the
  expiry is converted to this process's monotonic clock, so clock skew between the
  app and the database does not matter. Unknown tokens are never cached.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from loopwise.patterns.lifecycle import AsyncResource
from loopwise.service.identity.sessions import Caller, hash_token, load_caller
from loopwise.service.listener import PgListener

__all__ = ["CHANNEL", "Announced", "CacheStats", "SessionCache"]

CHANNEL = "loopwise_auth"

# token_urlsafe(32) gives 43 characters; anything else cannot be ours and costs no query.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


class Announced(Protocol):
    """Another cache that PostgreSQL keeps current through the session cache's connection."""

    @property
    def channel(self) -> str: ...

    def on_notify(self, payload: str) -> None: ...

    def on_listening(self) -> None: ...

    def on_lost(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot of a cache kept current by PostgreSQL's announcements (this one or another)."""

    entries: int
    hits: int
    misses: int  # lookups that went to PostgreSQL
    invalidations: int  # announcements applied (and losses of the LISTEN connection)
    listening: bool


class SessionCache(AsyncResource):
    """Callers by token hash; ``ttl=0`` turns the cache off (every lookup queries)."""

    def __init__(
        self,
        dsn: str,
        *,
        ttl: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
        also: Sequence[Announced] = (),
    ) -> None:
        if ttl < 0:
            raise ValueError("`ttl` must not be negative")
        if max_entries < 1:
            raise ValueError("`max_entries` must be positive")
        # One LISTEN connection per process, whatever the number of caches it keeps current.
        self._also = {other.channel: other for other in also}
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[Caller, float]] = OrderedDict()
        self._by_user: dict[int, set[bytes]] = {}
        self._generation = 0
        self._hits = self._misses = self._invalidations = 0
        self._listener = PgListener(
            dsn,
            [CHANNEL, *self._also],
            on_notify=self._on_notify,
            on_listening=self._on_listening,
            on_lost=self._on_lost,
            name="auth",
        )

    async def _aopen(self) -> None:
        if self._ttl > 0:
            await self._listener.open()

    async def _aclose(self) -> None:
        await self._listener.aclose()
        self._on_lost()

    def stats(self) -> CacheStats:
        return CacheStats(
            len(self._entries),
            self._hits,
            self._misses,
            self._invalidations,
            self._listener.listening,
        )

    async def find_caller(self, pool: asyncpg.Pool, token: str) -> Caller | None:
        """The user owning the live session ``token``, or None (unknown, expired, revoked)."""
        if not _TOKEN.fullmatch(token):
            return None
        token_hash = hash_token(token)
        entry = self._entries.get(token_hash)
        if entry is not None:
            caller, until = entry
            if self._clock() < until:
                self._hits += 1
                return caller
            self._drop(token_hash)
        self._misses += 1
        generation = self._generation
        loaded = await load_caller(pool, token_hash)
        if loaded is None:
            return None
        caller, seconds_left = loaded
        # Keep it only if nothing was announced while the row was read (see the rule).
        if self._ttl > 0 and generation == self._generation and self._listener.listening:
            self._put(token_hash, caller, self._clock() + min(self._ttl, seconds_left))
        return caller

    def forget_session(self, token_hash: bytes) -> None:
        """Drop one session now (this process); others hear of it through PostgreSQL."""
        self._generation += 1
        self._drop(token_hash)

    def forget_user(self, user_id: int) -> None:
        """Drop every session of ``user_id`` now (this process)."""
        self._generation += 1
        for token_hash in self._by_user.pop(user_id, set()):
            self._entries.pop(token_hash, None)

    def _on_listening(self) -> None:
        self._forget_all()
        for other in self._also.values():
            other.on_listening()

    def _on_lost(self) -> None:
        self._forget_all()
        for other in self._also.values():
            other.on_lost()

    def _on_notify(self, channel: str, payload: str) -> None:
        other = self._also.get(channel)
        if other is not None:
            other.on_notify(payload)
            return
        self._invalidations += 1
        kind, _, key = payload.partition(":")
        if kind == "s":
            try:
                token_hash = bytes.fromhex(key)
            except ValueError:
                self._forget_all()
            else:
                self.forget_session(token_hash)
        elif kind == "u" and key.isdigit():
            self.forget_user(int(key))
        else:  # "*" (a truncate), or anything this version does not know: the safe answer
            self._forget_all()

    def _forget_all(self) -> None:
        self._generation += 1
        self._entries.clear()
        self._by_user.clear()

    def _put(self, token_hash: bytes, caller: Caller, until: float) -> None:
        while len(self._entries) >= self._max:
            oldest, (evicted, _) = self._entries.popitem(last=False)
            self._unindex(oldest, evicted.id)
        self._entries[token_hash] = (caller, until)
        self._by_user.setdefault(caller.id, set()).add(token_hash)

    def _drop(self, token_hash: bytes) -> None:
        entry = self._entries.pop(token_hash, None)
        if entry is not None:
            self._unindex(token_hash, entry[0].id)

    def _unindex(self, token_hash: bytes, user_id: int) -> None:
        hashes = self._by_user.get(user_id)
        if hashes is not None:
            hashes.discard(token_hash)
            if not hashes:
                del self._by_user[user_id]
