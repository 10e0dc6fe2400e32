"""The event loop's CPU per request, measured in process: no server, no load generator.

    loopwise-bench request-cost --database-url postgresql://postgres@127.0.0.1/postgres

Throughput on a shared two-core machine says as much about the neighbours as about the
code. This drives each app's ASGI callable directly, one request after another, with a
prepared scope, and reads the loop thread's own CPU clock (``time.thread_time``) around
``requests`` of them: what the loop pays per request, which is what bounds a worker's
throughput, and nearly independent of the load around it. Work done on other threads
(the log writer, PostgreSQL itself) is not counted; the loop's share of a query
(asyncpg's encoding, decoding and protocol) is.

Targets run in alternating rounds, and each figure is the median round, so drift (CPU
frequency, a neighbour's burst) hits every target alike. The baseline is FastAPI's hello
world (``apps/hello.py``); loopwise runs with everything on: authentication against the
session cache (hits after the first request), the preferences document from its cache
(likewise), /metrics counting, admission control, the
watchdog, body limits, security headers and the access log (JSON lines, to a sink that
discards them, written by the log thread as in production).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from asgi_lifespan import LifespanManager
from starlette.types import ASGIApp, Message

from loopwise.service.app import create_app
from loopwise.service.identity.sessions import open_session
from loopwise.service.logs import configure_logging
from loopwise.service.settings import load_settings
from loopwise_bench.apps import hello

__all__ = ["Cost", "log_to_nowhere", "measure_request_cost", "report"]

_REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}


@dataclass(frozen=True)
class Cost:
    """One target's loop CPU per request, in microseconds, over the rounds."""

    name: str
    rounds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    @property
    def best(self) -> float:
        """The cheapest round: interference from other processes only ever adds."""
        return min(self.rounds)


@dataclass(frozen=True)
class _Target:
    name: str
    app: ASGIApp
    path: str
    headers: list[tuple[bytes, bytes]]


async def _receive() -> Message:
    return _REQUEST


def _scope(target: _Target) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": target.path,
        "raw_path": target.path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), *target.headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _run(target: _Target, requests: int) -> float:
    """Serve ``requests`` GETs; returns the loop thread's CPU µs per request."""
    statuses: list[int] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    app = target.app
    started = time.thread_time()
    for _ in range(requests):
        # A fresh scope per request, as a server makes one.
        await app(_scope(target), _receive, send)
    elapsed = time.thread_time() - started
    if set(statuses) != {200}:
        raise RuntimeError(f"{target.name} answered {sorted(set(statuses))}, not only 200")
    return elapsed / requests * 1e6


@asynccontextmanager
async def _targets(dsn: str, data_dir: Path) -> AsyncIterator[list[_Target]]:
    settings = load_settings(
        database_url=dsn, data_dir=data_dir, jobs_in_process=False, _env_file=None
    )
    async with AsyncExitStack() as stack:
        baseline = await stack.enter_async_context(
            LifespanManager(hello.create_app(), startup_timeout=60)
        )
        service = await stack.enter_async_context(
            LifespanManager(create_app(settings), startup_timeout=60)
        )
        conn = await asyncpg.connect(dsn)
        try:
            user_id = await conn.fetchval(
                "INSERT INTO users (email, display_name, password_hash, email_verified_at) "
                "VALUES ('cost@bench.example.com', 'Cost', 'x', now()) RETURNING id"
            )
            token, _ = await open_session(conn, user_id, 3600)
        finally:
            await conn.close()
        bearer = [(b"authorization", f"Bearer {token}".encode())]
        yield [
            _Target("FastAPI hello", baseline.app, "/hello", []),
            _Target("GET /users/{id}", service.app, f"/users/{user_id}", bearer),
            _Target("GET /users/me", service.app, "/users/me", bearer),
            _Target("GET /users/me/preferences", service.app, "/users/me/preferences", bearer),
        ]


async def measure_request_cost(
    dsn: str,
    data_dir: Path,
    *,
    requests: int = 2000,
    rounds: int = 7,
    profile: Path | None = None,
    only: str | None = None,
) -> list[Cost]:
    """Each target's loop CPU per request: ``rounds`` alternating rounds of ``requests``.

    ``only`` keeps the targets whose name contains it. With ``profile``, each target is
    also run once under cProfile and its statistics are written to ``profile/<n>.prof``.
    """
    async with _targets(dsn, data_dir) as targets:
        if only is not None:
            targets = [target for target in targets if only in target.name]
        for target in targets:  # warm: the session cache, prepared statements, lazy imports
            await _run(target, 50)
        costs = {target.name: Cost(target.name, []) for target in targets}
        for n in range(rounds):
            order = targets if n % 2 == 0 else targets[::-1]
            for target in order:
                costs[target.name].rounds.append(await _run(target, requests))
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, after measuring
            await _profile(targets, requests, profile)
    return list(costs.values())


async def _profile(targets: list[_Target], requests: int, out: Path) -> None:
    import cProfile

    for number, target in enumerate(targets):
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
        await _run(target, requests)
        profiler.disable()
        profiler.dump_stats(out / f"{number}.prof")


def report(costs: list[Cost]) -> list[str]:
    """The table: µs per request, and hello's cost over each target's (1.0 = as cheap)."""
    base = costs[0] if costs and costs[0].name == "FastAPI hello" else None
    lines = [
        f"loop-thread CPU µs per request over {len(costs[0].rounds)} rounds "
        f"(load average {os.getloadavg()[0]:.1f}); vs hello = hello's µs / the target's",
        f"{'target':<28} {'median':>7} {'best':>7} {'vs hello':>9} {'(best)':>7}  rounds",
    ]
    for cost in costs:
        ratio = f"{base.median / cost.median:.2f}x" if base else "-"
        best = f"{base.best / cost.best:.2f}x" if base else "-"
        spread = ", ".join(f"{r:.0f}" for r in cost.rounds)
        lines.append(
            f"{cost.name:<28} {cost.median:>7.1f} {cost.best:>7.1f} {ratio:>9} {best:>7}  {spread}"
        )
    return lines


def log_to_nowhere() -> None:
    """Access log on, at INFO, as JSON lines its writer thread sends to /dev/null.

    Call it before anything else configures logging: the process's log writer is made
    once, on whatever ``sys.stderr`` is then.
    """
    real = sys.stderr
    # Kept open for the process's life: the log writer thread owns it from here.
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - see above
    try:
        configure_logging("json", "info")
    finally:
        sys.stderr = real
