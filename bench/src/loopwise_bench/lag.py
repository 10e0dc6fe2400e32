"""Event-loop lag from the service's ``/metrics``: the watchdog's histogram, between two reads.

    before = read_lag(url)
    ...load...
    window = read_lag(url) - before   # LagWindow: samples, mean, p99 and max bucket bounds

The histogram gives bucket bounds, not exact values: "max ≤ 25 ms" means the worst sample
fell in the bucket ending at 25 ms. The watchdog's buckets include 15 and 20 ms, so the
storm's target, max < 20 ms, is met only when the max bound reads 15 ms or less. Stalls
are the watchdog's count of lags past its threshold (each logged once with the blocking
stack).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import httpx

__all__ = ["LagWindow", "read_lag"]

_BUCKET = re.compile(r'^loopwise_event_loop_lag_seconds_bucket\{le="([^"]+)"\} ([0-9.e+-]+)$')
_SUM = "loopwise_event_loop_lag_seconds_sum "
_COUNT = "loopwise_event_loop_lag_seconds_count "
_STALLS = "loopwise_event_loop_stalls_total "


@dataclass(frozen=True, slots=True)
class LagWindow:
    """Cumulative lag histogram (bound → count) with its sum and count, and the stalls."""

    buckets: dict[float, float]
    total: float
    count: float
    stalls: float

    def __sub__(self, earlier: LagWindow) -> LagWindow:
        return LagWindow(
            {le: n - earlier.buckets.get(le, 0.0) for le, n in self.buckets.items()},
            self.total - earlier.total,
            self.count - earlier.count,
            self.stalls - earlier.stalls,
        )

    def bound(self, quantile: float) -> float | None:
        """The upper bound (seconds) of the bucket holding ``quantile`` of the samples."""
        if self.count <= 0:
            return None
        for le in sorted(self.buckets):
            if self.buckets[le] >= quantile * self.count:
                return le
        return math.inf

    def summary(self) -> dict[str, float | None]:
        return {
            "samples": self.count,
            "mean_ms": round(1000 * self.total / self.count, 3) if self.count else None,
            "p99_le_ms": _ms(self.bound(0.99)),
            "max_le_ms": _ms(self.bound(1.0)),
            "stalls": self.stalls,
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None or math.isinf(seconds) else round(seconds * 1000, 3)


def read_lag(base_url: str) -> LagWindow:
    """Read the lag histogram (all workers' samples, in multiprocess mode) from /metrics."""
    text = httpx.get(base_url + "/metrics", timeout=10.0).text
    buckets: dict[float, float] = {}
    total = count = stalls = 0.0
    for line in text.splitlines():
        if match := _BUCKET.match(line):
            buckets[float(match[1])] = float(match[2])
        elif line.startswith(_SUM):
            total = float(line.removeprefix(_SUM))
        elif line.startswith(_COUNT):
            count = float(line.removeprefix(_COUNT))
        elif line.startswith(_STALLS):
            stalls = float(line.removeprefix(_STALLS))
    return LagWindow(buckets, total, count, stalls)
