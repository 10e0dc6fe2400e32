"""A registration storm (argon2id hashing) beside steady reads: does the loop stay free?

    result = run_storm(generator, url, reads, registrations, rate=2000, connections=32,
                       storm_connections=16, seconds=15)

Two windows on the same running server, back to back: ``GET /users/{id}`` at a constant
rate alone, then the same while a second load generator registers new users as fast as it can. Each
window reads the watchdog's lag histogram from ``/metrics`` before and after. Hashing runs
on a thread pool, so the loop's lag must stay small (target: max < 20 ms); the reads' p99
may grow only as far as sharing two cores with argon2 explains (target: at most 2x).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from loopwise_bench.generators import LoadGenerator, run_closed, run_paced
from loopwise_bench.lag import read_lag
from loopwise_bench.loadgen import ClosedResult, PacedResult, RequestPlan

__all__ = ["StormResult", "run_storm"]


@dataclass(frozen=True, slots=True)
class StormResult:
    rate: float
    quiet: PacedResult
    stormy: PacedResult
    storm: ClosedResult | None
    quiet_lag: dict[str, Any]
    stormy_lag: dict[str, Any]

    @property
    def p99_ratio(self) -> float | None:
        quiet = self.quiet.latency_us.get("p99")
        stormy = self.stormy.latency_us.get("p99")
        return round(stormy / quiet, 3) if quiet and stormy else None


def run_storm(
    generator: LoadGenerator,
    url: str,
    reads: RequestPlan,
    registrations: RequestPlan,
    *,
    rate: float,
    connections: int,
    storm_connections: int,
    seconds: float,
) -> StormResult:
    """Measure the reads' latency and the loop's lag without, then with, the storm."""
    before = read_lag(url)
    quiet = run_paced(generator, url, reads, rate=rate, connections=connections, seconds=seconds)
    middle = read_lag(url)
    storm: list[ClosedResult] = []

    def register() -> None:
        storm.append(
            run_closed(
                generator, url, registrations, connections=storm_connections, seconds=seconds + 2
            )
        )

    # The storm starts first, so the measured window is inside it from its first request.
    thread = threading.Thread(target=register, name="register-storm")
    thread.start()
    try:
        stormy = run_paced(
            generator, url, reads, rate=rate, connections=connections, seconds=seconds
        )
        after = read_lag(url)
    finally:
        thread.join()
    return StormResult(
        rate=rate,
        quiet=quiet,
        stormy=stormy,
        storm=storm[0] if storm else None,
        quiet_lag=(middle - before).summary(),
        stormy_lag=(after - middle).summary(),
    )
