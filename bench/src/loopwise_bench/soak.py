"""The soak: the mixed workload at a constant rate for minutes, watching each process's memory.

    result = run_soak(generator, url, plan, rate=300, connections=32, seconds=600, pid=server.pid)
    result.processes   # per process: RSS after warm-up, at the end, at its peak

A leak shows as growth that keeps going; warm-up does not (caches filling, the pool
opening its connections, the allocator settling). So each process is measured from its
reading once a tenth of the run has passed to its last reading, and the run passes when
no process grew by more than ``FLAT_GROWTH`` of its resident size over that span.
"""

from __future__ import annotations

from dataclasses import dataclass

from loopwise_bench.generators import LoadGenerator, run_paced
from loopwise_bench.loadgen import PacedResult, RequestPlan
from loopwise_bench.memory import MemorySampler, Sample

__all__ = ["FLAT_GROWTH", "ProcessMemory", "SoakResult", "run_soak"]

FLAT_GROWTH = 0.05  # at most 5 % more resident memory at the end than after warm-up
_WARM_UP_SHARE = 0.1


@dataclass(frozen=True, slots=True)
class ProcessMemory:
    process: str  # "main" or "worker <pid>"
    warm_bytes: int
    last_bytes: int
    peak_bytes: int

    @property
    def growth(self) -> float:
        return (self.last_bytes - self.warm_bytes) / self.warm_bytes


@dataclass(frozen=True, slots=True)
class SoakResult:
    paced: PacedResult
    processes: list[ProcessMemory]

    @property
    def max_growth(self) -> float:
        return max((p.growth for p in self.processes), default=0.0)

    @property
    def flat(self) -> bool:
        return bool(self.processes) and self.max_growth <= FLAT_GROWTH


def run_soak(
    generator: LoadGenerator,
    url: str,
    plan: RequestPlan,
    *,
    rate: float,
    connections: int,
    seconds: float,
    pid: int,
) -> SoakResult:
    """Drive ``plan`` at ``rate`` for ``seconds`` while sampling the server tree's RSS."""
    with MemorySampler(interval=max(0.5, seconds / 120)) as memory:
        memory.watch("server", pid)
        paced = run_paced(generator, url, plan, rate=rate, connections=connections, seconds=seconds)
    return SoakResult(paced, _per_process(memory.series().get("server", []), seconds))


def _per_process(samples: list[Sample], seconds: float) -> list[ProcessMemory]:
    if not samples:
        return []
    start = samples[0][0]
    warm_from = start + seconds * _WARM_UP_SHARE
    out: list[ProcessMemory] = []
    for process in sorted({name for _, rss in samples for name in rss}):
        series = [(t, rss[process]) for t, rss in samples if process in rss]
        warm = next((value for t, value in series if t >= warm_from), series[-1][1])
        out.append(ProcessMemory(process, warm, series[-1][1], max(value for _, value in series)))
    return out
