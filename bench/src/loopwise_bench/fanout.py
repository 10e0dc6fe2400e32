"""The outbound fan-out, run in a process of its own so its client is all it measures.

    python -m loopwise_bench.fanout naive http://127.0.0.1:PORT/delay/20 1000 10

prints one JSON line: how long fetching ``count`` URLs took with ``limit`` in flight, and
how many succeeded. The ideal is ``count / limit * delay``: 1,000 URLs at 20 ms, ten at a
time, take 2.0 s. Implementations:

- ``sockets``: ``limit`` keep-alive HTTP/1.1 connections on asyncio streams, each sending
  its next request as soon as the last answer is read. No client library: what the
  server, the loop and the machine cost, the floor under every client.
- ``httpx``: one shared ``httpx.AsyncClient`` and a semaphore, what a careful user of
  httpx writes by hand: the floor under ``loopwise``, which sends through httpx.
- ``loopwise``: :func:`loopwise.patterns.fetch_all` through one shared ``Downstream``
  whose per-host concurrency limit is ``limit``.
- ``naive``: the blog post's client-per-call pattern.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass

__all__ = ["IMPLEMENTATIONS", "FanoutResult", "run_fanout"]

_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:\s*(\d+)")


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


async def _httpx(url: str, count: int, limit: int) -> tuple[int, int, float]:
    import httpx

    slots = asyncio.Semaphore(limit)
    pool = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
    async with httpx.AsyncClient(timeout=5.0, limits=pool) as client:

        async def one(n: int) -> bool:
            async with slots:
                try:
                    response = await client.get(f"{url}?n={n}")
                except httpx.HTTPError:
                    return False
                return response.status_code == 200

        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            calls = [group.create_task(one(n)) for n in range(count)]
        seconds = time.perf_counter() - started
    ok = sum(call.result() for call in calls)
    return ok, count - ok, seconds


async def _sockets(url: str, count: int, limit: int) -> tuple[int, int, float]:
    parsed = urllib.parse.urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    todo = iter(range(count))
    ok = 0

    async def connection() -> None:
        nonlocal ok
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for n in todo:  # one shared iterator: each connection takes the next URL
                request = f"GET {parsed.path}?n={n} HTTP/1.1\r\nHost: {host}\r\n\r\n"
                writer.write(request.encode())
                head = await reader.readuntil(b"\r\n\r\n")
                status, _, rest = head.partition(b"\r\n")
                length = _CONTENT_LENGTH.search(rest)
                await reader.readexactly(int(length[1]) if length else 0)
                ok += status.split(b" ")[1] == b"200"
        finally:
            writer.close()
            await writer.wait_closed()

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(limit):
            group.create_task(connection())
    seconds = time.perf_counter() - started
    return ok, count - ok, seconds


IMPLEMENTATIONS = {"sockets": _sockets, "httpx": _httpx, "loopwise": _loopwise, "naive": _naive}
"""Every implementation, floors first: the order the bench runs and reports them in."""


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
    fetch = IMPLEMENTATIONS[implementation]
    ok, failed, seconds = asyncio.run(fetch(url, count, limit))
    print(json.dumps({"seconds": round(seconds, 4), "ok": ok, "failed": failed}))  # noqa: T201 -- the parent reads it


if __name__ == "__main__":
    main()
