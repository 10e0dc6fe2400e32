"""The outbound fan-out, run in a process of its own so its client is all it measures.

    python -m loopwise_bench.fanout naive http://127.0.0.1:PORT/delay/20 1000 10

prints one JSON line: how long fetching ``count`` URLs took with ``limit`` in flight, and
how many succeeded. The ideal is ``count / limit * delay``: 1,000 URLs at 20 ms, ten at a
time, take 2.0 s. Implementations: ``naive``, the blog post's client-per-call pattern, and
``loopwise``, :func:`loopwise.patterns.fetch_all` through one shared ``Downstream`` whose
per-host concurrency limit is ``limit``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass

__all__ = ["FanoutResult", "run_fanout"]


@dataclass(frozen=True, slots=True)
class FanoutResult:
    implementation: str
    urls: int
    limit: int
    delay_ms: int
    seconds: float
    ok: int
    failed: int

    @property
    def ideal_seconds(self) -> float:
        return self.urls / self.limit * self.delay_ms / 1000

    @property
    def ratio_to_ideal(self) -> float:
        return self.seconds / self.ideal_seconds


async def _naive(url: str, count: int, limit: int) -> tuple[int, int, float]:
    from loopwise_bench.apps.naive import fetch_all

    started = time.perf_counter()
    responses = await fetch_all([f"{url}?n={n}" for n in range(count)], asyncio.Semaphore(limit))
    seconds = time.perf_counter() - started
    ok = sum(1 for r in responses if r is not None and r.status_code == 200)
    return ok, count - ok, seconds


async def _loopwise(url: str, count: int, limit: int) -> tuple[int, int, float]:
    from loopwise.patterns import Downstream, Limits, fetch_all

    ok = failed = 0
    # The shared client is built once per process (the service's lifespan owns it), so
    # the clock starts after it exists; the naive version pays for a client per call.
    async with Downstream(
        "fanout", url, timeout=5.0, limits=Limits(concurrency=limit)
    ) as downstream:
        started = time.perf_counter()
        async with fetch_all(downstream, [f"{url}?n={n}" for n in range(count)]) as outcomes:
            async for outcome in outcomes:
                if outcome.kind == "ok" and outcome.value is not None:
                    ok += outcome.value.status_code == 200
                    failed += outcome.value.status_code != 200
                else:
                    failed += 1
        seconds = time.perf_counter() - started
    return ok, failed, seconds


_IMPLEMENTATIONS = {"naive": _naive, "loopwise": _loopwise}


def run_fanout(
    implementation: str, url: str, *, count: int, limit: int, delay_ms: int
) -> FanoutResult:
    """Run one implementation in a child process and return what it measured."""
    done = subprocess.run(  # noqa: S603 -- our own interpreter and module
        [
            sys.executable,
            "-m",
            "loopwise_bench.fanout",
            implementation,
            url,
            str(count),
            str(limit),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"fan-out ({implementation}) failed: {done.stderr.strip()}")
    measured = json.loads(done.stdout)
    return FanoutResult(implementation, count, limit, delay_ms, **measured)


def main() -> None:
    implementation, url, count, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    fetch = _IMPLEMENTATIONS[implementation]
    ok, failed, seconds = asyncio.run(fetch(url, count, limit))
    print(json.dumps({"seconds": round(seconds, 4), "ok": ok, "failed": failed}))  # noqa: T201 -- the parent reads it


if __name__ == "__main__":
    main()
