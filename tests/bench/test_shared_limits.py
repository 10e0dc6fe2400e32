"""The shared-limit cost benchmark runs, against a given Redis and a private one of its own."""

from __future__ import annotations

from loopwise.patterns import Limits
from loopwise_bench.shared_limits import measure_shared_limit_cost
from tests.cluster.engines import PrivateRedis


async def test_cost_is_measured_for_both_limiters(redis_server: PrivateRedis) -> None:
    """Every call of every round is timed, for the per-process and the shared limiter."""
    cost = await measure_shared_limit_cost(
        redis_server.url, rounds=2, calls=10, bounds=Limits(concurrency=10)
    )
    assert cost.calls == 20
    assert {name: len(times) for name, times in cost.wall.items()} == {
        "per-process": 20,
        "redis": 20,
    }
    assert "p99" in cost.summary("redis")


async def test_a_private_redis_is_started_when_none_is_given() -> None:
    """Without a URL the benchmark starts, uses and stops a redis-server of its own."""
    cost = await measure_shared_limit_cost(None, rounds=2, calls=10, bounds=Limits())
    assert cost.cpu["redis"] > 0
