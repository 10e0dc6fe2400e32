"""The targets table: each row computed from the report alone."""

from __future__ import annotations

from loopwise_bench.loadgen import ClosedResult, PacedResult
from loopwise_bench.results import BenchReport, ScenarioResult
from loopwise_bench.targets import targets


def _paced(p50_ms: float) -> PacedResult:
    return PacedResult(
        rate=50.0,
        connections=16,
        seconds=15.0,
        requests=750,
        errors={},
        statuses={200: 750},
        latency_us={"p50": p50_ms * 1000, "p99": p50_ms * 1200},
    )


def _report(branch: PacedResult | None) -> BenchReport:
    overview = ScenarioResult("overview_one_downstream", "loopwise_one_downstream", "overview")
    overview.paced = _paced(58.6)
    return BenchReport(
        config={},
        machine={},
        started_at=0.0,
        scenarios={overview.name: overview},
        slowest_branch=branch,
    )


def _overview_row(report: BenchReport) -> tuple[str, float]:
    (row,) = [t for t in targets(report) if t.what.startswith("overview p50")]
    return row.what, row.measured


def test_overview_is_compared_with_its_branch_measured_alone_in_the_same_run() -> None:
    """The overview's p50 is divided by the 50 ms simulator's own p50 as a client saw it."""
    what, measured = _overview_row(_report(_paced(53.0)))
    assert (what, measured) == (
        "overview p50 / slowest branch (one 50 ms downstream, measured alone)",
        round(58.6 / 53.0, 3),
    )


def test_without_the_branch_measured_the_overview_is_compared_with_its_nominal_50_ms() -> None:
    """A run that did not measure the branch says so and divides by the nominal 50 ms."""
    what, measured = _overview_row(_report(None))
    assert (what, measured) == (
        "overview p50 / slowest branch (one 50 ms downstream, nominal)",
        round(58.6 / 50.0, 3),
    )


def _closed(name: str, rps_by_connections: dict[int, float]) -> ScenarioResult:
    result = ScenarioResult(name, "server", name)
    result.closed = [
        ClosedResult(connections=c, seconds=10.0, requests=int(rps * 10), errors={}, latency_us={})
        for c, rps in rps_by_connections.items()
    ]
    return result


def test_hot_reads_are_judged_by_their_lowest_ratio_to_hello() -> None:
    """Each hot read / FastAPI hello at every concurrency both ran at; the lowest is judged."""
    scenarios = [
        _closed("fastapi_hello", {16: 20_000, 64: 20_000, 256: 16_000}),
        _closed("user_by_id", {16: 16_000, 64: 14_000, 256: 15_000}),
        _closed("users_me", {16: 13_000, 64: 12_000}),
        _closed("preferences", {16: 11_000, 512: 20_000}),  # c=512: hello did not run there
    ]
    report = BenchReport(
        config={}, machine={}, started_at=0.0, scenarios={r.name: r for r in scenarios}
    )
    rows = {t.what: (t.measured, t.met) for t in targets(report) if "FastAPI hello" in t.what}
    assert rows == {
        "GET /users/{id} / FastAPI hello, lowest of c=16, 64, 256": (0.7, False),
        "GET /users/me / FastAPI hello, lowest of c=16, 64": (0.6, True),
        "GET /users/me/preferences / FastAPI hello, lowest of c=16": (0.55, False),
    }
