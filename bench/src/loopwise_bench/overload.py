"""Past saturation: throughput, errors and p99 up to 4,096 connections, liveness, recovery.

Answers are counted by status: a 503 is load shed on purpose (admission control,
docs/operations/overload.md) and is reported apart from failures (other statuses, socket
errors, timeouts), and the work done is the 2xx/3xx rate, not the generator's count of
answers.

While the load generator holds each concurrency, a probe asks ``/healthz`` every 200 ms
with a short timeout: a service that queues without bound (or deadlocks) stops answering
it. After the last step a light constant-rate run checks that the service recovered at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from loopwise_bench.generators import LoadGenerator, run_closed, run_paced
from loopwise_bench.loadgen import ClosedResult, PacedResult, RequestPlan

__all__ = ["HealthProbe", "OverloadResult", "OverloadStep", "run_overload"]


@dataclass(frozen=True, slots=True)
class OverloadStep:
    load: ClosedResult
    health_ok: int
    health_failed: int
    health_p99_ms: float | None
    health_max_ms: float | None

    @property
    def shed_rate(self) -> float:
        """Share of answers that were 503: shed at the door."""
        return self.load.shed_count / max(1, self.load.requests)

    @property
    def failure_rate(self) -> float:
        """Share of requests that failed otherwise: other statuses, socket errors, timeouts."""
        return (self.load.error_count - self.load.shed_count) / max(1, self.load.requests)


@dataclass(frozen=True, slots=True)
class OverloadResult:
    scenario: str
    steps: list[OverloadStep]
    recovery: PacedResult


class HealthProbe:
    """Ask ``url`` every ``interval`` seconds from a thread; count answers and time them."""

    def __init__(self, url: str, *, interval: float = 0.2, timeout: float = 2.0) -> None:
        self._url = url
        self._interval = interval
        self._timeout = timeout
        self._stop = threading.Event()
        self._latencies: list[float] = []
        self._failed = 0
        self._thread = threading.Thread(target=self._run, name="health-probe", daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=self._timeout) as client:
            while not self._stop.wait(self._interval):
                started = time.perf_counter()
                try:
                    ok = client.get(self._url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    self._latencies.append((time.perf_counter() - started) * 1000)
                else:
                    self._failed += 1

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> tuple[int, int, float | None, float | None]:
        """(answered, failed, p99 ms, max ms) — call after the probe has stopped."""
        values = sorted(self._latencies)
        if not values:
            return 0, self._failed, None, None
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        return len(values), self._failed, round(p99, 2), round(values[-1], 2)


def run_overload(
    generator: LoadGenerator,
    base_url: str,
    scenario: str,
    plan: RequestPlan,
    *,
    concurrencies: tuple[int, ...],
    seconds: float,
    threads: int,
    recovery_rate: float,
    recovery_connections: int,
    progress: Callable[[str], None],
) -> OverloadResult:
    """Hold each concurrency for ``seconds`` while probing liveness, then check recovery."""
    steps: list[OverloadStep] = []
    for connections in concurrencies:
        progress(f"overload {scenario}: {connections} connections")
        with HealthProbe(base_url + "/healthz") as probe:
            load = run_closed(
                generator,
                base_url,
                plan,
                connections=connections,
                seconds=seconds,
                threads=threads,
                count_statuses=True,
            )
        ok, failed, p99, worst = probe.summary()
        step = OverloadStep(load, ok, failed, p99, worst)
        steps.append(step)
        progress(
            f"  {load.ok_rps:,.0f} ok/s of {load.rps:,.0f} answers/s, {step.shed_rate:.1%} shed, "
            f"{step.failure_rate:.1%} failed, p99 {load.latency_us.get('p99', 0) / 1000:,.1f} ms; "
            f"/healthz {ok} ok {failed} failed"
        )
    progress(f"overload {scenario}: recovery at {recovery_rate:,.0f} req/s")
    recovery = run_paced(
        generator,
        base_url,
        plan,
        rate=recovery_rate,
        connections=recovery_connections,
        seconds=seconds,
    )
    return OverloadResult(scenario, steps, recovery)
