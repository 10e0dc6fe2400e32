"""Concurrency and rate limits per key shared by every process, through Redis.

    async with RedisStore.from_url(url, instances=3) as store:
        limits = RedisLimits(store, "shipments", Limits(concurrency=10, rate=50.0), lease=10.0)
        async with limits.acquire("shipments.internal:443"):  # 10 at once, 50/s: all processes
            ...

The same :class:`~loopwise.patterns.limits.Limiter` as :class:`KeyedLimits`, with the state
in Redis:

- **Concurrency slots are leases**: a sorted set of holder -> lease end. A holder that dies
  (SIGKILL, lost host) keeps its slot only until ``lease`` runs out. ``lease`` must exceed
  the longest hold (a :class:`~loopwise.patterns.outbound.Downstream` bounds each call by its
  ``timeout``); a hold past it lets another caller in.
- **Rate is GCRA with reservations**: one timestamp per key (the theoretical arrival time).
  A caller reserves the next token and sleeps until it is due, so waiting callers go in
  order, one interval apart, with no polling.
- **Waiting is bounded** by the deadline in force and ``max_wait`` (:func:`wait_until`) and
  **fair across processes**: each process queues its own callers first come first served
  (:class:`~loopwise.patterns._slots.Slots`), and only the oldest polls Redis, holding one
  ticket in a shared line. A freed slot goes to the oldest ticket, so the processes that
  wait take turns and none starves, however many callers each has.

The check and the take are one Lua script (``_TAKE``): counting live leases, the caller's
place in line and the rate timestamp, then taking, must be atomic across processes, and a
MULTI/WATCH transaction retries precisely under contention. ``limits`` (the library) has
fixed and moving windows, but neither leases nor reservations, so it does not fit here.
Redis's own clock (``TIME``) times everything, so processes need not agree on the time.

When Redis is away the :class:`RedisStore` falls back, and so does this limiter: to
per-process :class:`KeyedLimits` with the store's share (``concurrency // instances``,
``rate / instances``). While some processes share and others fall back, the total may
exceed the limit by the fallen-back processes' shares; once all fall back, it holds.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal, NoReturn

from loopwise.patterns._slots import Slots, wait_until
from loopwise.patterns.deadlines import DEADLINE_MARGIN
from loopwise.patterns.exceptions import LimitTimeout
from loopwise.patterns.limits import KeyedLimits, KeyStats, Limits, LimitsStats
from loopwise.patterns.shared_store import RedisStore

__all__ = ["RedisLimits"]

# KEYS: slots (holder -> lease end), line (waiter -> ticket), line expiry (waiter -> end),
# ticket counter, rate timestamp. ARGV: holder, concurrency (0: none), lease, wait in line
# (1/0), line TTL, rate interval (0: none), burst tolerance, longest rate wait (-1: none).
# Times in microseconds of Redis's clock. Returns {taken (1, 0: not yet, -1: rate too
# far off), rate delay, slots in use}.
_TAKE = """
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local me, limit, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[5])
local in_use = 0
if limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
    redis.call('ZREM', KEYS[2], gone)
    redis.call('ZREM', KEYS[3], gone)
  end
  in_use = redis.call('ZCARD', KEYS[1])
  local rank = redis.call('ZRANK', KEYS[2], me)
  if not rank then
    rank = redis.call('ZCARD', KEYS[2])
    if rank >= limit - in_use and ARGV[4] == '1' then
      redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), me)
    end
  end
  if rank >= limit - in_use then
    if ARGV[4] == '1' then
      redis.call('ZADD', KEYS[3], now + ttl, me)
      for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], math.ceil(ttl / 1000) + 1000) end
    end
    return {0, 0, in_use}
  end
  redis.call('ZREM', KEYS[2], me)
  redis.call('ZREM', KEYS[3], me)
end
local delay, interval = 0, tonumber(ARGV[6])
if interval > 0 then
  local tat = math.max(tonumber(redis.call('GET', KEYS[5]) or 0), now)
  delay = math.max(0, tat - tonumber(ARGV[7]) - now)
  if tonumber(ARGV[8]) >= 0 and delay > tonumber(ARGV[8]) then return {-1, delay, in_use} end
  redis.call('SET', KEYS[5], tat + interval, 'PX', math.ceil((tat + interval - now) / 1000) + 1000)
end
if limit > 0 then
  local lease_end = now + delay + tonumber(ARGV[3])
  redis.call('ZADD', KEYS[1], lease_end, me)
  local keep = math.ceil((lease_end - now) / 1000) + 1000
  if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
  in_use = in_use + 1
end
return {1, delay, in_use}
"""


class RedisLimits:
    """Per-key concurrency and rate limits shared through ``store`` (a :class:`Limiter`).

    Args:
        store: the shared Redis and its fallback mode.
        name: names the limits in keys, errors and stats.
        limits: the bounds every process shares.
        lease: seconds a slot is held at most; a dead holder's slot frees after this.
        poll: seconds between a waiting process's tries for a freed slot.
        margin: waiting ends this many seconds before the caller's deadline.
    """

    def __init__(
        self,
        store: RedisStore,
        name: str,
        limits: Limits | None = None,
        *,
        lease: float = 10.0,
        poll: float = 0.005,
        margin: float = DEADLINE_MARGIN,
    ) -> None:
        bounds = limits or Limits()
        if not lease > 0 or not poll > 0:
            raise ValueError("`lease` and `poll` must be positive")
        self.store = store
        self.name = name
        self.bounds = bounds
        self.lease = lease
        self.poll = poll
        self.margin = margin
        self._fallback = KeyedLimits(
            name,
            concurrency=None if bounds.concurrency is None else store.share(bounds.concurrency),
            rate=None if bounds.rate is None else bounds.rate / store.instances,
            burst=store.share(bounds.burst),
            max_wait=bounds.max_wait,
            margin=margin,
        )
        self._interval_us = 0 if bounds.rate is None else round(1e6 / bounds.rate)
        self._process = uuid.uuid4().hex  # holders: "<process>:<n>", unique across processes
        self._holders = (f"{self._process}:{n}" for n in itertools.count())
        # Per key: this process's line (one caller at a time polls Redis), and its counts
        # [held here, shared in use as Redis last said, admitted, rejected]. Kept for every
        # key ever used: a downstream's keys are its hosts, a handful.
        self._lines: dict[str, Slots] = {}
        self._keys: dict[str, list[int]] = {}
        self._admitted = 0
        self._rejected = 0
        self._fallback_calls = 0

    @asynccontextmanager
    async def acquire(self, key: str) -> AsyncIterator[None]:
        """Hold one slot for ``key``, shared with every process, for the duration of the block.

        Raises:
            LimitTimeout: no slot or rate token within the deadline or ``max_wait``.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        until = wait_until(self.bounds.max_wait, margin=self.margin)
        counts = self._keys.setdefault(key, [0, 0, 0, 0])
        holder = next(self._holders)
        taken = await self._take(key, holder, counts, start, until)
        if taken is None:  # Redis is away: this process's share, in this process
            self._fallback_calls += 1
            async with self._fallback.acquire(key):
                yield
            return
        counts[0] += 1
        counts[2] += 1
        self._admitted += 1
        try:
            if taken > 0:
                await asyncio.sleep(taken)  # the reserved rate token falls due
            yield
        finally:
            counts[0] -= 1
            if self.bounds.concurrency is not None:
                slots = self._slots_key(key)
                await self.store.run(lambda c: c.zrem(slots, holder), force=True)

    def stats(self) -> LimitsStats:
        """This process's holds and waits per key; ``shared_in_use`` as Redis last said."""
        fallback = self._fallback.stats()
        keys = {
            key: KeyStats(
                in_use=held,
                waiting=(self._lines[key].waiting if key in self._lines else 0),
                admitted=admitted,
                rejected=rejected,
            )
            for key, (held, _, admitted, rejected) in self._keys.items()
        }
        for key, local in fallback.keys.items():
            mine = keys.get(key, KeyStats(0, 0, 0, 0))
            keys[key] = KeyStats(
                in_use=mine.in_use + local.in_use,
                waiting=mine.waiting + local.waiting,
                admitted=mine.admitted + local.admitted,
                rejected=mine.rejected + local.rejected,
            )
        return LimitsStats(
            name=self.name,
            concurrency=self.bounds.concurrency,
            rate=self.bounds.rate,
            admitted=self._admitted + fallback.admitted,
            rejected=self._rejected + fallback.rejected,
            keys=keys,
            shared_in_use=sum(c[1] for c in self._keys.values()),
            fallback=not self.store.shared,
            fallback_calls=self._fallback_calls,
        )

    async def _take(
        self, key: str, holder: str, counts: list[int], start: float, until: float | None
    ) -> float | None:
        """Seconds until the reserved rate token is due, once a slot is held; None: fall back."""
        taken = await self._try(key, holder, counts, until, wait=False)
        if taken is None or taken >= 0:
            return taken
        line = self._lines.setdefault(key, Slots(1))
        if not await line.take(until):
            self._reject(key, counts, "concurrency", start)
        try:
            while True:
                taken = await self._try(key, holder, counts, until, wait=True)
                if taken is None or taken >= 0:
                    return taken
                now = asyncio.get_running_loop().time()
                if until is not None and now + self.poll > until:
                    await self._leave_line(key, holder)
                    self._reject(key, counts, "concurrency", start)
                await asyncio.sleep(self.poll)
        finally:
            line.release()

    async def _try(
        self, key: str, holder: str, counts: list[int], until: float | None, *, wait: bool
    ) -> float | None:
        """One atomic try: the delay of a taken slot, -1.0 if not yet, None in fallback."""
        b = self.bounds
        longest = -1 if until is None else max(0, until - asyncio.get_running_loop().time())
        ttl = max(20 * self.poll, 0.25)  # a silent waiter's ticket outlives a few polls
        args = (
            holder,
            b.concurrency or 0,
            round(self.lease * 1e6),
            int(wait),
            round(ttl * 1e6),
            self._interval_us,
            self._interval_us * (b.burst - 1),
            -1 if longest == -1 else round(longest * 1e6),
        )
        keys = [
            self._slots_key(key),
            *(self._key(key, p) for p in ("line", "ttl", "tickets", "tat")),
        ]
        # EVAL, not EVALSHA: one round trip even after Redis restarted (no NOSCRIPT, then
        # load, then retry); Redis caches the compiled script by its hash either way.
        reply = await self.store.run(lambda c: c.eval(_TAKE, len(keys), *keys, *args))
        if reply is None:
            return None
        status, delay, in_use = (int(x) for x in reply)
        counts[1] = in_use
        if status < 0:
            self._reject(key, counts, "rate", None)
        return delay / 1e6 if status else -1.0

    async def _leave_line(self, key: str, holder: str) -> None:
        line, ttl = self._key(key, "line"), self._key(key, "ttl")
        await self.store.run(lambda c: c.zrem(line, holder))
        await self.store.run(lambda c: c.zrem(ttl, holder))

    def _reject(
        self,
        key: str,
        counts: list[int],
        limit: Literal["concurrency", "rate"],
        start: float | None,
    ) -> NoReturn:
        counts[3] += 1
        self._rejected += 1
        waited = 0.0 if start is None else asyncio.get_running_loop().time() - start
        raise LimitTimeout(self.name, key=key, limit=limit, waited=waited)

    def _slots_key(self, key: str) -> str:
        return self._key(key, "slots")

    def _key(self, key: str, part: str) -> str:
        # One hash tag per limit and key: its keys live in one Redis Cluster slot, as a
        # script touching several keys requires.
        return self.store.key("limits", f"{{{self.name}:{key}}}", part)
