"""Drive load with wrk: a closed loop at a set concurrency, or a constant rate (open loop).

    plan = RequestPlan([Request("GET", "/hello")])
    closed = run_closed(wrk, url, plan, connections=64, seconds=10)
    paced = run_paced(wrk, url, plan, rate=2000, connections=32, seconds=10)

Both run wrk with one Lua script (``lua/requests.lua``). The constant-rate mode gives each
connection its own schedule and measures every latency from when the request was *due*,
the correction wrk2 makes for coordinated omission; see the script's header for why wrk
with a paced script rather than ``h2load --rps`` (which times from the actual send).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

__all__ = [
    "ClosedResult",
    "LoadGeneratorMissing",
    "PacedResult",
    "Request",
    "RequestPlan",
    "find_wrk",
    "percentiles",
    "run_closed",
    "run_paced",
]

_SEPARATOR = "\x1f"  # between headers in the requests file; never inside a header


class LoadGeneratorMissing(RuntimeError):
    """wrk is not installed; the message says how to install it."""


def find_wrk() -> str:
    """The path of the ``wrk`` executable.

    Raises:
        LoadGeneratorMissing: with the package to install.
    """
    path = shutil.which("wrk")
    if path is None:
        raise LoadGeneratorMissing(
            "the load generator `wrk` is not installed: on Debian or Ubuntu run "
            "`sudo apt-get install wrk` (package `wrk`); on macOS `brew install wrk`"
        )
    return path


@dataclass(frozen=True, slots=True)
class Request:
    """One request the load generator may send; ``weight`` sets its share of the mix."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    weight: int = 1

    def line(self) -> str:
        for text in (self.method, self.path, self.body, *self.headers.values()):
            if any(c in text for c in "\t\n\r" + _SEPARATOR):
                raise ValueError(f"request fields must not contain tabs or newlines: {text!r}")
        if self.weight < 1:
            raise ValueError("`weight` must be a positive integer")
        headers = _SEPARATOR.join(f"{k}: {v}" for k, v in self.headers.items())
        return "\t".join((str(self.weight), self.method, self.path, headers, self.body))


@dataclass(frozen=True, slots=True)
class RequestPlan:
    """The requests of a scenario; each wrk thread walks them in a shuffled, weighted cycle."""

    requests: Sequence[Request]

    def write(self, directory: Path) -> Path:
        if not self.requests:
            raise ValueError("a request plan needs at least one request")
        handle, name = tempfile.mkstemp(prefix="requests-", suffix=".tsv", dir=directory)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.writelines(request.line() + "\n" for request in self.requests)
        return Path(name)


@dataclass(frozen=True, slots=True)
class ClosedResult:
    """wrk's summary of a closed-loop run: each connection sends as soon as it is answered."""

    connections: int
    seconds: float
    requests: int
    errors: dict[str, int]
    latency_us: dict[str, float]
    statuses: dict[int, int] = field(default_factory=dict)  # counted runs only

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def shed_count(self) -> int:
        """Answers 503: load shed on purpose (counted runs only)."""
        return self.statuses.get(503, 0)

    @property
    def ok_rps(self) -> float:
        """Requests/s answered 2xx or 3xx: the work actually done (counted runs only)."""
        ok = sum(n for status, n in self.statuses.items() if status < 400)
        return ok / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def error_rate(self) -> float:
        return self.error_count / max(1, self.requests)


@dataclass(frozen=True, slots=True)
class PacedResult:
    """A constant-rate run: latency measured from each request's due time."""

    rate: float
    connections: int
    seconds: float
    requests: int
    errors: dict[str, int]
    statuses: dict[int, int]
    latency_us: dict[str, float]

    @property
    def achieved_rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        bad_status = sum(n for status, n in self.statuses.items() if status >= 400)
        socket = sum(n for kind, n in self.errors.items() if kind != "status")
        return bad_status + socket


def _script() -> str:
    return str(files("loopwise_bench").joinpath("lua/requests.lua"))


def _wrk(
    wrk: str,
    url: str,
    plan: RequestPlan,
    *,
    threads: int,
    connections: int,
    seconds: float,
    mode: str,
    extra: Sequence[str] = (),
    timeout_s: float = 10.0,
) -> tuple[dict[str, Any], dict[int, int], dict[int, int]]:
    with tempfile.TemporaryDirectory(prefix="loopwise-wrk-") as tmp:
        requests_file = plan.write(Path(tmp))
        command = [
            wrk,
            f"--threads={threads}",
            f"--connections={connections}",
            f"--duration={max(1, round(seconds))}s",
            f"--timeout={max(1, round(timeout_s))}s",
            f"--script={_script()}",
            url,
            "--",
            str(requests_file),
            *extra,
        ]
        env = {**os.environ, "LOOPWISE_WRK_MODE": mode}
        done = subprocess.run(  # noqa: S603 -- a fixed argv, no shell
            command, capture_output=True, text=True, env=env, check=False
        )
    if done.returncode != 0 or "LOOPWISE_SUMMARY" not in done.stdout:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
    summary: dict[str, Any] = {}
    hist: dict[int, int] = {}
    statuses: dict[int, int] = {}
    for line in done.stdout.splitlines():
        tag, _, rest = line.partition(" ")
        if tag == "LOOPWISE_SUMMARY":
            summary = json.loads(rest)
        elif tag in ("LOOPWISE_HIST", "LOOPWISE_STATUS"):
            key, count = (int(x) for x in rest.split())
            target = hist if tag == "LOOPWISE_HIST" else statuses
            target[key] = target.get(key, 0) + count
    return summary, hist, statuses


def run_closed(
    wrk: str,
    url: str,
    plan: RequestPlan,
    *,
    connections: int,
    seconds: float,
    threads: int = 2,
    count_statuses: bool = False,
) -> ClosedResult:
    """Closed loop: ``connections`` clients, each sending again as soon as it is answered.

    ``count_statuses`` also counts answers by status (slower for wrk: a Lua call each).
    """
    summary, _, statuses = _wrk(
        wrk,
        url,
        plan,
        threads=min(threads, connections),
        connections=connections,
        seconds=seconds,
        mode="counted" if count_statuses else "closed",
    )
    return ClosedResult(
        connections=connections,
        seconds=summary["duration_us"] / 1e6,
        requests=summary["requests"],
        errors=summary["errors"],
        latency_us=summary["latency_us"],
        statuses=statuses,
    )


def run_paced(
    wrk: str,
    url: str,
    plan: RequestPlan,
    *,
    rate: float,
    connections: int,
    seconds: float,
) -> PacedResult:
    """Open loop: ``rate`` requests/s in total, spread over ``connections`` paced clients.

    A connection whose previous request is still outstanding falls behind its schedule,
    and that wait counts as latency, as it would for a real client arriving on time.
    """
    if rate <= 0:
        raise ValueError("`rate` must be positive")
    summary, hist, statuses = _wrk(
        wrk,
        url,
        plan,
        threads=connections,  # one connection per thread: each keeps its own schedule
        connections=connections,
        seconds=seconds,
        mode="paced",
        extra=[f"{rate / connections:.6f}"],
        timeout_s=max(10.0, seconds),
    )
    return PacedResult(
        rate=rate,
        connections=connections,
        seconds=summary["duration_us"] / 1e6,
        requests=sum(hist.values()),
        errors=summary["errors"],
        statuses=statuses,
        latency_us=percentiles(hist),
    )


def percentiles(hist: dict[int, int]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max of a histogram of microseconds → count."""
    total = sum(hist.values())
    if total == 0:
        return {}
    wanted = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "p999": 0.999}
    out: dict[str, float] = {}
    seen = 0
    keys = sorted(hist)
    pending = sorted(wanted.items(), key=lambda kv: kv[1])
    for key in keys:
        seen += hist[key]
        while pending and seen >= pending[0][1] * total:
            out[pending.pop(0)[0]] = float(key)
    out["max"] = float(keys[-1])
    out["mean"] = sum(k * n for k, n in hist.items()) / total
    return out
