"""``loopwise-bench request-cost`` serves every target and prints a row per target."""

from __future__ import annotations

from pathlib import Path

from loopwise_bench.request_cost import measure_request_cost, report


async def test_every_target_is_measured(database_url: str, tmp_path: Path) -> None:
    """Each target answers 200 on every request (else it raises) and gets a row."""
    costs = await measure_request_cost(database_url, tmp_path, requests=3, rounds=2)
    assert [cost.name for cost in costs] == [
        "FastAPI hello",
        "GET /users/{id}",
        "GET /users/me",
        "GET /users/me/preferences",
    ]
    assert all(len(cost.rounds) == 2 and cost.best > 0 for cost in costs)
    lines = report(costs)
    assert lines[2].split()[:3] == ["FastAPI", "hello", f"{costs[0].median:.1f}"]
    assert len(lines) == 6
