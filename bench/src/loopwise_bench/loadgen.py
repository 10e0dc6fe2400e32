"""What the load generators send and what they report, whichever generator ran.

    plan = RequestPlan([Request("GET", "/hello")])
    closed: ClosedResult   # a closed loop: requests, errors, latency from each send
    paced: PacedResult     # a constant rate: latency from each request's due time

The generators themselves (k6, wrk) and how to run them are in ``generators.py``; this
module holds the shapes they share, so a report reads the same whichever produced it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ClosedResult",
    "Exited",
    "LoadGeneratorMissing",
    "PacedResult",
    "Request",
    "RequestPlan",
    "percentiles",
    "run_to_exit",
]

_SEPARATOR = "\x1f"  # between headers in the requests file; never inside a header


class LoadGeneratorMissing(RuntimeError):
    """The chosen load generator is not installed; the message says how to install it."""


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
    """The requests of a scenario; each client walks them in a shuffled, weighted cycle."""

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
    """A closed-loop run: each connection sends again as soon as it is answered.

    ``errors`` by kind: wrk's connect/read/write/timeout/status, or k6's network/status.
    ``cpu_seconds`` is the generator's own CPU time (user + system, every thread).
    """

    connections: int
    seconds: float
    requests: int
    errors: dict[str, int]
    latency_us: dict[str, float]
    statuses: dict[int, int] = field(default_factory=dict)  # k6: always; wrk: counted runs
    generator: str = ""
    cpu_seconds: float = 0.0

    @property
    def generator_cores(self) -> float:
        """Cores the load generator kept busy on average: its share of this machine."""
        return self.cpu_seconds / self.seconds if self.seconds else 0.0

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
    """A constant-rate run: latency measured from each request's due time.

    ``errors["dropped"]`` (k6) counts requests that fell due while every connection was
    still waiting and so were never sent: they count as failures, as a late answer would.
    """

    rate: float
    connections: int
    seconds: float
    requests: int
    errors: dict[str, int]
    statuses: dict[int, int]
    latency_us: dict[str, float]
    generator: str = ""
    cpu_seconds: float = 0.0

    @property
    def achieved_rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def dropped(self) -> int:
        """Requests due but never sent (every connection busy): unsent, so failed."""
        return self.errors.get("dropped", 0)

    @property
    def error_count(self) -> int:
        bad_status = sum(n for status, n in self.statuses.items() if status >= 400)
        socket = sum(n for kind, n in self.errors.items() if kind != "status")
        return bad_status + socket

    @property
    def generator_cores(self) -> float:
        """Cores the load generator kept busy on average: its share of this machine."""
        return self.cpu_seconds / self.seconds if self.seconds else 0.0


@dataclass(frozen=True, slots=True)
class Exited:
    """A finished generator process: its output, exit code and own CPU time."""

    returncode: int
    stdout: str
    stderr: str
    cpu_seconds: float


def run_to_exit(command: Sequence[str], env: Mapping[str, str], *, limit_s: float) -> Exited:
    """Run ``command`` to its end (killed after ``limit_s``) and measure its CPU time.

    ``os.wait4`` gives this one child's resource usage; ``RUSAGE_CHILDREN`` would mix in
    a second generator running at the same time (the registration storm runs two).
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=dict(env))  # noqa: S603 -- a fixed argv, no shell
        guard = threading.Timer(limit_s, process.send_signal, (signal.SIGKILL,))
        guard.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            guard.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Exited(process.returncode, out.read(), err.read(), usage.ru_utime + usage.ru_stime)


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
