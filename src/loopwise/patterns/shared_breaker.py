"""A circuit breaker whose state every process shares through Redis.

    breaker = SharedBreaker(store, "shipments", cool_down=5.0)
    async with breaker.admit() as attempt:     # CircuitOpen while open, in any process
        ...

Each process still judges the downstream by its own calls (its rolling window, as in
:class:`~loopwise.patterns.breaker.CircuitBreaker`); what is shared is the verdict:

- the first process to open the breaker writes it to Redis (a key that lives
  ``cool_down``); every other process reads it within ``sync_every`` seconds (at its next
  call after that) and opens too, so all fail fast;
- after the cool-down, **one** probe goes through across all processes (a ``SET NX`` claim
  that expires after ``probe_timeout``, should the prober die); the others keep failing fast;
- the probe's success closes the breaker in Redis, and every process closes once, at its
  next read; its failure opens it again for another cool-down.

Three keys, plain commands, no script: each write stands alone, and a reader only needs
the pair (open TTL, half-open marker) to tell the state. When the store is in fallback
the breaker is per process until Redis answers again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio

from loopwise.patterns.breaker import Attempt, CircuitBreaker, CircuitState
from loopwise.patterns.exceptions import CircuitOpen
from loopwise.patterns.shared_store import RedisStore

__all__ = ["SharedBreaker"]

# How long the half-open marker outlives an opening: a breaker nobody calls for a day
# forgets it was open (its next call probes anyway).
_HALF_OPEN_KEPT_MS = 86_400_000


class SharedBreaker(CircuitBreaker):
    """A :class:`CircuitBreaker` whose open, half-open and closed states all processes share.

    Args:
        store: the shared Redis and its fallback mode.
        name: names the breaker in keys, errors and stats.
        sync_every: seconds between reads of the shared state (at most one per call).
        probe_timeout: seconds a half-open probe may take before another process may probe.
        **kwargs: the :class:`CircuitBreaker` arguments (``failure_ratio``, ``cool_down``...).
    """

    def __init__(
        self,
        store: RedisStore,
        name: str,
        *,
        sync_every: float = 0.1,
        probe_timeout: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, **kwargs)
        if not sync_every > 0 or not probe_timeout > 0:
            raise ValueError("`sync_every` and `probe_timeout` must be positive")
        self.store = store
        self.sync_every = sync_every
        self.probe_timeout = probe_timeout
        self._keys = tuple(
            store.key("breaker", f"{{{name}}}", p) for p in ("open", "half", "probe")
        )
        self._synced_at = -float("inf")

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[Attempt]:
        """Admit one call by the shared state, record its outcome, share any transition.

        Raises:
            CircuitOpen: open in any process, or half-open with the probe taken elsewhere.
        """
        await self._sync()
        if self._probe_due() and not await self._claim_probe():
            self._rejected += 1
            raise CircuitOpen(self.name, retry_after=0.0)
        generation = self._generation
        try:
            with self.attempt() as attempt:
                yield attempt
        finally:
            if self._generation != generation:
                await self._publish(self._state)

    def _probe_due(self) -> bool:
        if self._state is CircuitState.OPEN:
            return _now() >= self._opened_at + self.cool_down
        return self._state is CircuitState.HALF_OPEN and self._probing < self.probes

    async def _claim_probe(self) -> bool:
        probe = self._keys[2]
        ms = round(self.probe_timeout * 1000)

        async def claim(client: redis.asyncio.Redis) -> bool:
            return bool(await client.set(probe, self.name, nx=True, px=ms))

        won = await self.store.run(claim)
        return won is None or won  # in fallback this process decides alone

    async def _sync(self) -> None:
        now = _now()
        if now - self._synced_at < self.sync_every:
            return
        self._synced_at = now
        is_open, half = self._keys[0], self._keys[1]

        async def read(client: redis.asyncio.Redis) -> tuple[int, int]:
            async with client.pipeline(transaction=False) as pipe:
                pipe.pttl(is_open)
                pipe.exists(half)
                ttl, marked = await pipe.execute()
            return int(ttl), int(marked)

        shared = await self.store.run(read)
        if shared is None:
            return
        ttl, marked = shared
        if ttl > 0:
            if self._state is not CircuitState.OPEN:
                self._follow(CircuitState.OPEN, opened_ago=self.cool_down - ttl / 1000)
        elif marked:
            if self._state is CircuitState.CLOSED:  # opened and cooled down while unread
                self._follow(CircuitState.OPEN, opened_ago=self.cool_down)
        elif self._state is not CircuitState.CLOSED:
            self._slices.clear()
            self._follow(CircuitState.CLOSED)

    def _follow(self, state: CircuitState, *, opened_ago: float = 0.0) -> None:
        self._move(state)
        if state is CircuitState.OPEN:
            self._opened_at = _now() - max(0.0, opened_ago)

    async def _publish(self, state: CircuitState) -> None:
        is_open, half, probe = self._keys
        cool_ms = max(1, round(self.cool_down * 1000))

        async def write(client: redis.asyncio.Redis) -> None:
            async with client.pipeline(transaction=True) as pipe:
                if state is CircuitState.OPEN:
                    pipe.set(is_open, self.name, px=cool_ms)
                    pipe.set(half, self.name, px=_HALF_OPEN_KEPT_MS)
                    pipe.delete(probe)
                elif state is CircuitState.CLOSED:
                    pipe.delete(is_open, half, probe)
                else:  # a probe that gave no verdict (cancelled): let another probe
                    pipe.delete(probe)
                await pipe.execute()

        await self.store.run(write)
        self._synced_at = _now()


def _now() -> float:
    return asyncio.get_running_loop().time()
