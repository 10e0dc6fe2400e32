"""What a shared limit adds to each call: ``RedisLimits`` against per-process ``KeyedLimits``.

    loopwise-bench shared-limits --rounds 20 --calls 500

One process, one caller, no contention: the cost of taking and giving back a slot (and a
rate token), which is what every downstream call pays on top of the call itself. Rounds
alternate between the two limiters (which goes first alternates too), so a busy machine
slows both alike; the figures are per call: wall-clock p50/p99 and CPU time. Without
``--redis-url`` a private ``redis-server`` is started on a free loopback port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from loopwise.patterns import KeyedLimits, Limiter, Limits, RedisLimits, RedisStore

__all__ = ["SharedLimitCost", "measure_shared_limit_cost"]


@dataclass(frozen=True, slots=True)
class SharedLimitCost:
    """Per-call figures, in seconds, for each limiter."""

    calls: int
    wall: dict[str, list[float]]
    cpu: dict[str, float]

    def summary(self, name: str) -> str:
        ordered = sorted(self.wall[name])
        p50 = ordered[len(ordered) // 2]
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        return (
            f"p50 {p50 * 1e6:7.1f} us  p99 {p99 * 1e6:7.1f} us  "
            f"cpu {self.cpu[name] * 1e6:6.1f} us/call"
        )


async def measure_shared_limit_cost(
    redis_url: str | None, *, rounds: int, calls: int, bounds: Limits
) -> SharedLimitCost:
    """Alternate ``rounds`` rounds of ``calls`` sequential acquires on each limiter."""
    async with _redis(redis_url) as url, RedisStore.from_url(url, timeout=1.0) as store:
        limiters: dict[str, Limiter] = {
            "per-process": KeyedLimits.of("bench", bounds),
            "redis": RedisLimits(store, "bench", bounds),
        }
        wall: dict[str, list[float]] = {name: [] for name in limiters}
        cpu = dict.fromkeys(limiters, 0.0)
        for number in range(rounds):
            order = list(limiters) if number % 2 == 0 else list(reversed(limiters))
            for name in order:
                cpu[name] += await _round(limiters[name], calls, wall[name].append)
    total = rounds * calls
    return SharedLimitCost(total, wall, {name: spent / total for name, spent in cpu.items()})


async def _round(limiter: Limiter, calls: int, record: Callable[[float], None]) -> float:
    cpu_start = time.thread_time()
    for _ in range(calls):
        start = time.perf_counter()
        async with limiter.acquire("downstream:80"):
            pass
        record(time.perf_counter() - start)
    return time.thread_time() - cpu_start


@contextlib.asynccontextmanager
async def _redis(url: str | None) -> AsyncIterator[str]:
    """``url``, or a private redis-server on a free loopback port for the block."""
    if url is not None:
        yield url
        return
    binary = await asyncio.to_thread(shutil.which, "redis-server") or "/usr/bin/redis-server"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = await asyncio.to_thread(tempfile.mkdtemp, prefix="loopwise-bench-redis-")
    proc = await asyncio.create_subprocess_exec(
        binary,
        *("--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"),
        *("--dir", workdir),
        stdout=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(30):
            while True:  # a bounded poll: the server gives no other sign it is listening
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                break
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        await proc.wait()
        await asyncio.to_thread(shutil.rmtree, workdir, ignore_errors=True)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
