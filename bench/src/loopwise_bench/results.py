"""What a run measured: a :class:`ScenarioResult` per scenario, in one :class:`BenchReport`.

``write_report`` turns the report into ``report.json``, ``report.md`` and the charts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loopwise_bench.fanout import FanoutResult
from loopwise_bench.jobs import JobsResult
from loopwise_bench.loadgen import ClosedResult, PacedResult
from loopwise_bench.memory import Sample
from loopwise_bench.overload import OverloadResult
from loopwise_bench.paired import PairedResult
from loopwise_bench.seed import SeedCounts
from loopwise_bench.soak import SoakResult
from loopwise_bench.storm import StormResult

__all__ = ["BenchReport", "ScenarioResult"]


@dataclass(slots=True)
class ScenarioResult:
    name: str
    server: str
    title: str
    closed: list[ClosedResult] = field(default_factory=list)
    paced: PacedResult | None = None
    skipped: str | None = None

    @property
    def peak(self) -> ClosedResult | None:
        return max(self.closed, key=lambda r: r.rps, default=None)


@dataclass(slots=True)
class BenchReport:
    config: dict[str, Any]
    machine: dict[str, Any]
    started_at: float
    seed: SeedCounts | None = None
    scenarios: dict[str, ScenarioResult] = field(default_factory=dict)
    overload: OverloadResult | None = None
    fanout: list[FanoutResult] = field(default_factory=list)
    storm: StormResult | None = None
    soak: SoakResult | None = None
    # The one-downstream overview's slowest branch alone (the 50 ms simulator), same rate.
    slowest_branch: PacedResult | None = None
    watchdog: PairedResult | None = None  # GET /users/{id} throughput, watchdog on / off
    jobs: list[JobsResult] = field(default_factory=list)
    memory: dict[str, list[Sample]] = field(default_factory=dict)
    shutdown: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
