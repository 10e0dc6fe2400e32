"""Each caller's preferences document, in memory, forgotten the moment PostgreSQL says so.

    documents = PreferencesCache(ttl=60, max_entries=100_000)
    SessionCache(dsn, ..., also=[documents])    # its LISTEN connection announces to both
    kept = documents.find(user_id)              # (version, JSON body), or None: read it
    generation = documents.generation           # taken before the read
    documents.keep(user_id, version, body, generation)

With a query per request, ``GET /users/me/preferences`` spends most of its loop time on
the query: 0.16x of FastAPI hello's throughput, where the hot reads answered from the
session cache reach 0.7x and more (docs/benchmark/request-cost.md). A document changes
rarely, so each process keeps the ones it has served.

Consistency rule, the session cache's (``session_cache.py``, docs/operations/sessions.md):

- Every insert, update or delete of a preferences row is announced by a trigger on channel
  ``loopwise_preferences`` (migration 0009) when its transaction commits, whoever made
  it; each process forgets that user's document as the announcement arrives, heard on
  the session cache's LISTEN connection (one connection per process for both). The
  process that wrote forgets it before answering, so a client reads its own write back
  at once.
- Entries are used only while that LISTEN connection is up; when it drops, everything is
  forgotten and every read queries until LISTEN is in force again.
- A read that raced with an announcement is not kept (a generation counter).
- An entry lives at most ``ttl`` seconds; ``ttl=0`` turns the cache off.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from loopwise.service.identity.session_cache import CacheStats

__all__ = ["CHANNEL", "PreferencesCache"]

CHANNEL = "loopwise_preferences"


class PreferencesCache:
    """Documents by user id, as ``(version, JSON body)``; announcements come from outside.

    ``channel``, :meth:`on_notify`, :meth:`on_listening` and :meth:`on_lost` are what the
    connection that listens for it (``SessionCache(also=...)``) calls.
    """

    channel = CHANNEL

    def __init__(
        self,
        *,
        ttl: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl < 0:
            raise ValueError("`ttl` must not be negative")
        if max_entries < 1:
            raise ValueError("`max_entries` must be positive")
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[int, tuple[int, bytes, float]] = OrderedDict()
        self._generation = 0
        self._hits = self._misses = self._invalidations = 0
        self._listening = False

    def stats(self) -> CacheStats:
        return CacheStats(
            len(self._entries),
            self._hits,
            self._misses,
            self._invalidations,
            self._listening,
        )

    @property
    def generation(self) -> int:
        """Take it before reading a document; :meth:`keep` refuses it if anything changed."""
        return self._generation

    def find(self, user_id: int) -> tuple[int, bytes] | None:
        """The kept ``(version, body)`` of ``user_id``'s document, or None: read it."""
        entry = self._entries.get(user_id)
        if entry is not None:
            version, body, until = entry
            if self._clock() < until:
                self._hits += 1
                return version, body
            del self._entries[user_id]
        self._misses += 1
        return None

    def keep(self, user_id: int, version: int, body: bytes, generation: int) -> None:
        """Keep a document read after ``generation`` was taken, if nothing was announced since."""
        if self._ttl == 0 or generation != self._generation or not self._listening:
            return
        self._entries.pop(user_id, None)
        while len(self._entries) >= self._max:
            self._entries.popitem(last=False)
        self._entries[user_id] = (version, body, self._clock() + self._ttl)

    def forget(self, user_id: int) -> None:
        """Drop ``user_id``'s document now (this process); others hear of it through PostgreSQL."""
        self._generation += 1
        self._entries.pop(user_id, None)

    def on_notify(self, payload: str) -> None:
        """Apply an announcement on :attr:`channel`: a user id, or ``*`` for all."""
        self._invalidations += 1
        if payload.isdigit():
            self.forget(int(payload))
        else:  # "*" (a truncate), or anything this version does not know: the safe answer
            self._forget_all()

    def on_listening(self) -> None:
        """LISTEN is in force (again): keep from now on; what came before may be stale."""
        self._forget_all()
        self._listening = True

    def on_lost(self) -> None:
        """LISTEN is gone: forget everything and keep nothing until it is back."""
        self._listening = False
        self._forget_all()

    def _forget_all(self) -> None:
        self._generation += 1
        self._entries.clear()
