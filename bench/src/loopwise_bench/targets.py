"""The benchmark's targets, checked against one run's figures: met, missed (and by how much).

Every row is computed from the report alone, so the Markdown and the JSON say the same.
A target whose figures were not measured in this run is left out, not counted as met.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loopwise_bench.soak import FLAT_GROWTH

if TYPE_CHECKING:
    from loopwise_bench.results import BenchReport, ScenarioResult

__all__ = ["TargetRow", "targets"]

_SLOW_BRANCH_MS = 50.0  # the one-downstream overview's slowest branch (the simulator)


@dataclass(frozen=True, slots=True)
class TargetRow:
    what: str
    measured: float
    target: str
    met: bool
    unit: str = ""


def _peak(r: ScenarioResult | None) -> float | None:
    return r.peak.rps if r is not None and r.peak is not None else None


def _paced(r: ScenarioResult | None, key: str) -> float | None:
    if r is None or r.paced is None or key not in r.paced.latency_us:
        return None
    return r.paced.latency_us[key] / 1000


def _ratios(ours: ScenarioResult | None, theirs: ScenarioResult | None) -> dict[int, float]:
    """Closed-loop throughput ratio by concurrency, where both were measured at it."""
    if ours is None or theirs is None:
        return {}
    by_c = {point.connections: point.rps for point in theirs.closed if point.rps > 0}
    return {
        p.connections: p.rps / by_c[p.connections] for p in ours.closed if p.connections in by_c
    }


def targets(report: BenchReport) -> list[TargetRow]:
    """Each target the run has figures for."""
    s = report.scenarios.get
    rows: list[TargetRow] = []

    def add(
        what: str, value: float | None, target: str, ok: Callable[[float], bool], unit: str = ""
    ) -> None:
        if value is not None:
            rows.append(TargetRow(what, round(value, 3), target, ok(value), unit))

    ours = _peak(s("user_by_id"))
    add("GET /users/{id} throughput", ours, ">= 15,000", lambda v: v >= 15_000, "req/s")

    def at_least(goal: float) -> Callable[[float], bool]:
        return lambda v: v >= goal

    for base, label, goal in (
        ("floor_user_by_id", "FastAPI + asyncpg floor", 0.9),
        ("naive_user_by_id", "naive version", 15.0),
    ):
        theirs = _peak(s(base))
        if ours and theirs:
            add(
                f"GET /users/{{id}} vs {label}",
                ours / theirs,
                f">= {goal}x",
                at_least(goal),
                "x",
            )
    # Each hot read against FastAPI's hello world at every concurrency both were run at:
    # the lowest ratio is the one judged.
    hello = s("fastapi_hello")
    for name, title, goal in (
        ("user_by_id", "GET /users/{id}", 0.75),
        ("users_me", "GET /users/me", 0.6),
        ("preferences", "GET /users/me/preferences", 0.6),
    ):
        ratios = _ratios(s(name), hello)
        if ratios:
            at = ", ".join(f"{c}" for c in sorted(ratios))
            add(
                f"{title} / FastAPI hello, lowest of c={at}",
                min(ratios.values()),
                f">= {goal}x",
                at_least(goal),
                "x",
            )
    if report.watchdog is not None:
        add(
            "GET /users/{id} watchdog on / off (median of paired rounds)",
            report.watchdog.median,
            ">= 0.98x",
            at_least(0.98),
            "x",
        )
    p50 = _paced(s("overview_one_downstream"), "p50")
    branch = report.slowest_branch
    if p50 is not None:
        # The branch as a client sees it when this run measured it, else its nominal 50 ms.
        alone = branch.latency_us.get("p50") if branch is not None else None
        add(
            "overview p50 / slowest branch (one 50 ms downstream"
            + (", measured alone)" if alone else ", nominal)"),
            p50 / (alone / 1000 if alone else _SLOW_BRANCH_MS),
            "<= 1.15x",
            lambda v: v <= 1.15,
            "x",
        )
    add(
        "overview p99 (50 + 200 ms downstreams, 100 ms budget)",
        _paced(s("overview"), "p99"),
        "<= 115 ms",
        lambda v: v <= 115,
        "ms",
    )
    fast, slow = _paced(s("register"), "p50"), _paced(s("register_slow_smtp"), "p50")
    if fast and slow:
        add(
            "POST /register p50, SMTP 2 s / 1 ms",
            slow / fast,
            "0.8x to 1.25x",
            lambda v: 0.8 <= v <= 1.25,
            "x",
        )
    if report.storm is not None:
        lag = report.storm.stormy_lag.get("max_le_ms")
        add(
            "loop lag max during the register storm (bucket bound)",
            lag,
            "< 20 ms",
            lambda v: v < 20,
            "ms",
        )
        add(
            "GET /users/{id} p99, storm / no storm",
            report.storm.p99_ratio,
            "<= 2x",
            lambda v: v <= 2,
            "x",
        )
    fanout = {f.implementation: f for f in report.fanout}
    if (fetch := fanout.get("loopwise")) is not None:
        add(
            f"fetch_all, {fetch.urls} URLs at {fetch.delay_ms} ms / ideal",
            fetch.ratio_to_ideal,
            "<= 1.1x",
            lambda v: v <= 1.1,
            "x",
        )
        # What loopwise adds on top of the client it sends through.
        if (floor := fanout.get("httpx")) is not None:
            add(
                "fetch_all / one shared httpx client, same URLs",
                fetch.seconds / floor.seconds,
                "<= 1.05x",
                lambda v: v <= 1.05,
                "x",
            )
    paced_errors = sum(r.paced.error_count for r in report.scenarios.values() if r.paced)
    if report.scenarios:
        add("errors at the constant rates (below saturation)", paced_errors, "0", lambda v: v == 0)
    if report.overload is not None:
        failed = sum(step.health_failed for step in report.overload.steps)
        add("/healthz failures during overload", failed, "0", lambda v: v == 0)
        add(
            "errors in the recovery run after overload",
            report.overload.recovery.error_count,
            "0",
            lambda v: v == 0,
        )
    if report.soak is not None:
        add(
            "memory growth over the soak, worst process (after warm-up)",
            report.soak.max_growth * 100,
            f"<= {FLAT_GROWTH:.0%}",
            lambda v: v <= FLAT_GROWTH * 100,
            "%",
        )
        add("errors during the soak", report.soak.paced.error_count, "0", lambda v: v == 0)
    if report.shutdown:
        unclean = sum(1 for s_ in report.shutdown.values() if s_.get("exit_code") != 0)
        add("servers not exiting cleanly on SIGTERM", unclean, "0", lambda v: v == 0)
    return rows
