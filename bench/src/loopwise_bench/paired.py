"""Two servers that differ in one setting, measured in alternating rounds of one run.

    result = run_paired(generator, "on", url_on, "off", url_off, plan,
                        rounds=5, connections=64, seconds=10)
    result.median, result.low, result.high     # throughput on / off

A single closed loop per side says little on a shared two-core machine: neighbours come
and go between the two measurements, and a 5% effect hides in that drift. Here both
servers run at once and each round measures one then the other, swapping the order every
round (A B, B A, A B, ...), so a drift falls on both sides alike. The figure is the median
of the rounds' ratios; their range says how far one pair alone could have misled.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from loopwise_bench.generators import LoadGenerator, run_closed
from loopwise_bench.loadgen import ClosedResult, RequestPlan

__all__ = ["PairedResult", "run_paired"]


@dataclass(slots=True)
class PairedResult:
    """Per round, the closed-loop result of side A and of side B."""

    label_a: str
    label_b: str
    connections: int
    rounds: list[tuple[ClosedResult, ClosedResult]] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        """Each round's throughput of A over B (rounds where B served nothing left out)."""
        return [round(a.rps / b.rps, 4) for a, b in self.rounds if b.rps]

    @property
    def median(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None

    @property
    def low(self) -> float | None:
        return min(self.ratios, default=None)

    @property
    def high(self) -> float | None:
        return max(self.ratios, default=None)


def run_paired(
    generator: LoadGenerator,
    label_a: str,
    url_a: str,
    label_b: str,
    url_b: str,
    plan: RequestPlan,
    *,
    rounds: int,
    connections: int,
    seconds: float,
    threads: int = 2,
) -> PairedResult:
    """Closed loops at ``connections`` against A and B, ``rounds`` times, order alternating."""
    if rounds < 1:
        raise ValueError(f"`rounds` must be at least 1, got {rounds}")
    result = PairedResult(label_a, label_b, connections)
    for n in range(rounds):
        measured: dict[str, ClosedResult] = {}
        order = ((label_a, url_a), (label_b, url_b))
        for label, url in order if n % 2 == 0 else order[::-1]:
            measured[label] = run_closed(
                generator, url, plan, connections=connections, seconds=seconds, threads=threads
            )
        result.rounds.append((measured[label_a], measured[label_b]))
    return result
