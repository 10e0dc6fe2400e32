"""Shared limits and breakers across three real processes, a real Redis, a real downstream.

Each process runs ``tests/patterns/shared_driver.py`` (the toolkit as a user would use it,
through ``Downstream``); the downstream is an HTTP server in this test that records what it
saw: its concurrent requests, their arrival times, their outcomes. Redis is a private
``redis-server`` on a free port, stopped and restarted by the test. These run on real time
on a loaded machine, so they assert bounds the design guarantees exactly (concurrency),
counts and ordering; the few upper bounds on time are generous and say so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.engines import PrivateRedis
from tests.process_guard import spawn
from tests.servers import serve_asgi

pytestmark = pytest.mark.blocks_loop  # starts processes

_log = logging.getLogger("loopwise.shared")  # the figures, seen with -o log_cli=true
_DRIVER = Path(__file__).with_name("shared_driver.py")
# The store's bound on a Redis command where sharing is under test: at load average 10+ the
# default 50 ms is overrun now and then, and a false fallback admits a process's share on
# top of the shared limit (the stated cost of a partial fallback, tested on its own below).
_GENEROUS = 1.0


@dataclass
class Recorder:
    """A downstream that takes ``service_time`` per request and records what it saw."""

    service_time: float = 0.2
    failing: bool = False
    active: int = 0
    peak: int = 0
    arrivals: list[float] = field(default_factory=list)
    spans: list[tuple[float, float, int]] = field(default_factory=list)
    held: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    holding: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        start = time.monotonic()
        self.arrivals.append(start)
        self.active += 1
        self.peak = max(self.peak, self.active)
        status = 500 if self.failing else 200
        try:
            if scope["path"] == "/hold":
                async with self.holding:
                    self.held += 1
                    self.holding.notify_all()
                await self.release.wait()
            else:
                await asyncio.sleep(self.service_time)
        finally:
            # Counted as done before the answer leaves: the caller holds its slot until the
            # answer arrives, so two requests counted at once here overlapped there too
            # (counting until after the send overlaps this loop's lag with the next call).
            self.active -= 1
            self.spans.append((start, time.monotonic(), status))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    def most_in_any_second(self) -> int:
        times = sorted(self.arrivals)
        most, first = 0, 0
        for last, at in enumerate(times):
            while at - times[first] >= 1.0:
                first += 1
            most = max(most, last - first + 1)
        return most


@pytest.fixture
async def downstream() -> AsyncIterator[tuple[str, Recorder]]:
    recorder = Recorder()
    async with serve_asgi(recorder) as url:
        yield url, recorder
        recorder.release.set()


async def _drive(redis_url: str, url: str, **options: Any) -> asyncio.subprocess.Process:
    """Start one driver process; it says ``ready`` once set up, and waits for ``_go``."""
    proc = await spawn(
        sys.executable,
        str(_DRIVER),
        redis_url,
        url,
        json.dumps(options),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(60):
        assert await proc.stdout.readline() == b"ready\n"
    return proc


def _go(*procs: asyncio.subprocess.Process) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")


async def _reports(procs: list[asyncio.subprocess.Process]) -> list[dict[str, Any]]:
    async with asyncio.timeout(90):
        outputs = await asyncio.gather(*(p.communicate() for p in procs))
    assert all(p.returncode == 0 for p in procs), [p.returncode for p in procs]
    return [json.loads(out) for out, _ in outputs]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def test_three_processes_hold_one_concurrency_and_rate_limit(
    redis_server: PrivateRedis, downstream: tuple[str, Recorder]
) -> None:
    """Three processes sharing 10 at once and 50/s: the server never sees more, none starves."""
    url, recorder = downstream
    procs = [
        await _drive(
            redis_server.url,
            url,
            workers=20,
            seconds=4.0,
            concurrency=10,
            rate=50.0,
            store_timeout=_GENEROUS,
        )
        for _ in range(3)
    ]
    _go(*procs)
    reports = await _reports(procs)
    served = [r["outcomes"].get("200", 0) for r in reports]
    most = recorder.most_in_any_second()
    _log.warning("max concurrent %d, most in any second %d, served %s", recorder.peak, most, served)
    assert recorder.peak <= 10
    assert most <= 55
    assert all(not any(e[1] == "fallback" for e in r["events"]) for r in reports)
    # Fair across processes: each waits in the shared line in turn (measured: 25-39% each).
    assert min(served) >= 0.2 * sum(served)


async def test_slots_of_a_killed_process_come_back_within_the_lease(
    redis_server: PrivateRedis, downstream: tuple[str, Recorder]
) -> None:
    """A process SIGKILLed holding every slot: another gets them once the lease runs out."""
    url, recorder = downstream
    lease = 3.0
    holder = await _drive(
        redis_server.url,
        url,
        workers=10,
        seconds=60,
        path="/hold",
        lease=lease,
        store_timeout=_GENEROUS,
    )
    survivor = await _drive(
        redis_server.url,
        url,
        workers=10,
        seconds=lease + 4,
        lease=lease,
        store_timeout=_GENEROUS,
        deadline=1.0,  # each call waits at most 1 s, then fails fast and the worker tries again
    )
    _go(holder)
    async with asyncio.timeout(60), recorder.holding:
        await recorder.holding.wait_for(lambda: recorder.held >= 10)
    held_at = time.monotonic()
    holder.send_signal(signal.SIGKILL)
    await holder.wait()
    killed_at = time.monotonic()
    _go(survivor)
    recorder.release.set()
    (report,) = await _reports([survivor])
    first = min(a for a in recorder.arrivals if a > killed_at)
    _log.warning(
        "first call served %.2f s after the kill (lease %.1f s); survivor's calls %s",
        first - killed_at,
        lease,
        report["outcomes"],
    )
    # The dead holder's leases held until they ran out (taken before held_at), and no longer
    # than that: the bound is the lease; 2 s more is the generous allowance for a busy box.
    assert first >= held_at + lease - 0.5
    assert first <= killed_at + lease + 2.0
    assert report["outcomes"].get("200", 0) > 0
    # Nothing waits forever: every call ended within its 1 s deadline (plus a generous 2 s).
    assert max(report["latencies"]) < 3.0


async def test_every_process_opens_the_breaker_and_one_probe_closes_it(
    redis_server: PrivateRedis, downstream: tuple[str, Recorder]
) -> None:
    """A failing downstream: one busy process opens every breaker; one probe closes them all."""
    url, recorder = downstream
    recorder.failing = True
    recorder.service_time = 0.01
    common = {"seconds": 8.0, "min_calls": 10, "cool_down": 2.0, "store_timeout": _GENEROUS}
    # One busy process; two quiet ones (a call every 0.3 s), which on their own would need
    # 10 calls (3 s) to open, and would each probe on their own schedule.
    busy = await _drive(redis_server.url, url, workers=2, pause=0.02, **common)
    quiet = [await _drive(redis_server.url, url, workers=1, pause=0.3, **common) for _ in "ab"]
    procs = [busy, *quiet]
    _go(*procs)

    async def heal_once_open() -> None:
        # Heal the downstream once every call fails fast (0.5 s without one reaching it): the
        # probe after the cool-down finds it well. A bounded poll of the server's own record.
        while not recorder.arrivals or time.monotonic() - recorder.arrivals[-1] < 0.5:  # noqa: ASYNC110 -- polls a timestamp, no event to wait on
            await asyncio.sleep(0.05)
        recorder.failing = False

    async with asyncio.TaskGroup() as group:
        group.create_task(heal_once_open())
        reports = await _reports(procs)

    def first(report: dict[str, Any], state: str) -> float:
        return float(
            min(t for t, kind, what in report["events"] if kind == "breaker" and what == state)
        )

    opened = [first(r, "open") for r in reports]
    closed = [first(r, "closed") for r in reports]
    for r in reports:
        changes = [what for _, kind, what in r["events"] if kind == "breaker"]
        _log.warning("breaker %s, calls %s", changes, r["outcomes"])
        assert changes.count("closed") == 1
        assert changes[-1] == "closed"
        assert r["outcomes"].get("CircuitOpen", 0) > 0  # failed fast while open
    spread = (max(opened) - min(opened), max(closed) - min(closed))
    _log.warning("opened within %.3f s of each other, closed within %.3f s", *spread)
    # The design bound is one call after sync_every (0.1 s): 0.4 s for the quiet ones;
    # 1 s is the generous bound for a loaded machine.
    assert spread[0] < 1.0
    assert spread[1] < 1.0
    # One probe: the first call after healing was answered before the next one arrived.
    healed = [s for s in recorder.spans if s[2] == 200]
    assert healed[0][1] <= sorted(s[0] for s in healed)[1]


async def test_redis_stopped_mid_run_falls_back_and_sharing_resumes(
    redis_server: PrivateRedis, downstream: tuple[str, Recorder]
) -> None:
    """Redis killed, then restarted: each process falls back once, no call fails, it resumes."""
    url, recorder = downstream
    recorder.service_time = 0.05
    procs = [
        await _drive(redis_server.url, url, workers=10, seconds=6.0, concurrency=9)
        for _ in range(3)
    ]
    _go(*procs)
    await asyncio.sleep(1.5)
    await redis_server.stop(signal.SIGKILL)
    stopped_at = time.time()
    await asyncio.sleep(2.0)
    restarting_at = time.time()
    await redis_server.start()
    reports = await _reports(procs)
    for r in reports:
        modes = [(t, kind) for t, kind, _ in r["events"] if kind in ("fallback", "shared")]
        events = [(round(t - stopped_at, 3), k, why) for t, k, why in r["events"]]
        _log.warning("calls %s, events from the stop %s", r["outcomes"], events)
        assert set(r["outcomes"]) == {"200"}  # no call failed because of Redis
        # In fallback within 1 s of the stop (the bound is the store's timeout, 50 ms, per
        # call; 1 s is generous for a loaded machine, where a busy moment may even have
        # fallen back before), not sharing while Redis was away, sharing again at the end.
        assert [k for t, k in modes if t < stopped_at + 1.0][-1] == "fallback"
        assert not [t for t, k in modes if stopped_at < t < restarting_at and k == "shared"]
        assert modes[-1][1] == "shared"
        assert modes[-1][0] >= restarting_at
    latencies = [x for r in reports for x in r["latencies"]]
    _log.warning(
        "call latency p99 %.3f s (queueing for 9 slots included)", _percentile(latencies, 0.99)
    )
