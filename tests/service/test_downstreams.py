"""The service's downstreams: settings, typed calls, failures on time, lifespan, stats.

The calls answer or raise; falling back is the overview's (one) decision, tested there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from structlog.testing import capture_logs

from loopwise.patterns import (
    DEADLINE_MARGIN,
    CircuitState,
    Deadline,
    DeadlineExceeded,
    DownstreamError,
    DownstreamTimeout,
    DownstreamUnreachable,
    PatternError,
    fail_after,
)
from loopwise.service.app import create_app
from loopwise.service.deps import Downstreams_
from loopwise.service.downstreams import Downstreams, LoyaltyPoints
from loopwise.service.settings import InvalidSettings, Settings, load_settings
from loopwise_bench.sim import SimConfig, SimState, create_sim_app
from tests.cluster.engines import PrivateRedis
from tests.servers import closed_port, serve_asgi


def _settings(**values: Any) -> Settings:
    # Timeouts no busy machine reaches, unless a test is about them.
    values = {"loyalty_timeout": 10.0, "shipments_timeout": 10.0} | values
    return load_settings(_env_file=None, **values)


@pytest.fixture
async def sims() -> AsyncIterator[tuple[str, SimState, str, SimState]]:
    """Two simulators, one per downstream: (loyalty URL, state, shipments URL, state)."""
    loyalty = create_sim_app(SimConfig(latency_ms=0))
    shipments = create_sim_app(SimConfig(latency_ms=0))
    async with serve_asgi(loyalty) as loyalty_url, serve_asgi(shipments) as shipments_url:
        yield loyalty_url, loyalty.state.sim, shipments_url, shipments.state.sim


def test_settings_validate_downstream_urls() -> None:
    """Downstream URLs must be http(s) with a host; a trailing slash is dropped."""
    assert _settings(loyalty_url="http://loyalty:9001/").loyalty_url == "http://loyalty:9001"
    assert _settings(loyalty_url="").loyalty_url is None
    with pytest.raises(InvalidSettings, match=r"LOOPWISE_SHIPMENTS_URL: .*http:// or https://"):
        _settings(shipments_url="ftp://x")
    with pytest.raises(InvalidSettings, match="LOOPWISE_LOYALTY_CONCURRENCY"):
        _settings(loyalty_concurrency=0)


async def test_unconfigured_downstreams_are_absent() -> None:
    """Without URLs, neither downstream is there to call (the overview gives them no branch)."""
    async with Downstreams.from_settings(_settings()) as downstreams:
        assert (downstreams.has_loyalty, downstreams.has_shipments) == (False, False)
        assert downstreams.stats() == {}
        with pytest.raises(RuntimeError, match="not configured"):
            await downstreams.loyalty(1)


async def test_healthy_downstreams_answer_typed(
    sims: tuple[str, SimState, str, SimState],
) -> None:
    """Healthy downstreams give typed models; shipments come one call per order, in order."""
    loyalty_url, _, shipments_url, shipments_state = sims
    settings = _settings(loyalty_url=loyalty_url, shipments_url=shipments_url)
    async with Downstreams.from_settings(settings) as downstreams:
        loyalty = await downstreams.loyalty(42)
        shipments = await downstreams.shipments([5, 3, 9])
    assert isinstance(loyalty, LoyaltyPoints)
    assert loyalty.user_id == 42
    assert [s.order_id for s in shipments] == [5, 3, 9]
    assert shipments_state.requests == 3


async def test_shipment_fan_out_stays_under_the_host_limit(
    sims: tuple[str, SimState, str, SimState],
) -> None:
    """Thirty orders fan out, never more than the configured concurrency at the tracker."""
    _, _, shipments_url, state = sims
    state.config = SimConfig(latency_ms=10)
    settings = _settings(shipments_url=shipments_url, shipments_concurrency=3, shipments_timeout=5)
    async with Downstreams.from_settings(settings) as downstreams:
        shipments = await downstreams.shipments(list(range(1, 31)))
    assert len(shipments) == 30
    assert state.max_in_flight == 3


async def test_dead_and_slow_downstreams_fail_on_time(
    sims: tuple[str, SimState, str, SimState],
) -> None:
    """One refusing and one hanging downstream: each ends itself by the request's deadline.

    The deadline is only put in force, never enforced by a timer here, so what ends the
    hanging call is the downstream's own reading of it (to the microsecond on virtual time
    in ``tests/patterns/test_outbound.py``); real time bounds it only from below.
    """
    _, _, shipments_url, shipments_state = sims
    shipments_state.config = SimConfig(mode="hang")
    settings = _settings(
        loyalty_url=f"http://127.0.0.1:{closed_port()}",
        shipments_url=shipments_url,
        loyalty_timeout=1.0,
        shipments_timeout=1.0,
    )
    loop = asyncio.get_running_loop()
    async with Downstreams.from_settings(settings) as downstreams:
        started = loop.time()
        # 0.5 s, not less: on a loaded machine even a refused connect has taken 140 ms.
        # The outer 60 s only keeps a broken build from hanging the suite.
        async with fail_after(60):
            with Deadline.after(0.5).in_force():
                loyalty, shipments = await asyncio.gather(
                    downstreams.loyalty(1),
                    downstreams.shipments([1, 2, 3]),
                    return_exceptions=True,
                )
        elapsed = loop.time() - started
    # Refused at once on an idle machine; on a saturated one the refusal may come after the
    # call's budget: either way it failed by the deadline, not by its own 1 s timeout.
    assert isinstance(loyalty, DownstreamUnreachable | DeadlineExceeded)
    assert isinstance(shipments, DeadlineExceeded)
    assert shipments.budget is not None
    assert shipments.budget <= 0.5 - DEADLINE_MARGIN  # the call's own, not the safety net's
    assert elapsed >= 0.5 - DEADLINE_MARGIN - 0.001, elapsed


async def test_own_timeout_bounds_each_downstream(
    sims: tuple[str, SimState, str, SimState],
) -> None:
    """Without a request deadline, a slow downstream costs its own timeout, then fails."""
    loyalty_url, loyalty_state, _, _ = sims
    loyalty_state.config = SimConfig(mode="hang")
    settings = _settings(loyalty_url=loyalty_url, loyalty_timeout=0.1)
    loop = asyncio.get_running_loop()
    async with Downstreams.from_settings(settings) as downstreams:
        started = loop.time()
        with pytest.raises((DeadlineExceeded, DownstreamTimeout)):
            await downstreams.loyalty(1)
        elapsed = loop.time() - started
    assert elapsed >= 0.1, elapsed


async def test_failed_lookups_fail_the_shipments(
    sims: tuple[str, SimState, str, SimState],
) -> None:
    """Lookups answered with errors fail the whole call, saying how many failed."""
    _, _, shipments_url, state = sims
    state.config = SimConfig(mode="fail", latency_ms=0)
    settings = _settings(shipments_url=shipments_url)
    async with Downstreams.from_settings(settings) as downstreams:
        with pytest.raises(DownstreamError, match="3 of 3 shipment lookups failed"):
            await downstreams.shipments([1, 2, 3])


async def test_unknown_user_is_an_answer(sims: tuple[str, SimState, str, SimState]) -> None:
    """A 404 from the loyalty service means no account: None, not a failure."""
    loyalty_url, _, _, _ = sims
    async with Downstreams.from_settings(_settings(loyalty_url=loyalty_url)) as downstreams:
        assert await downstreams.loyalty(0) is None  # the simulator knows no user 0: 404


async def test_breaker_changes_are_logged_and_visible(
    sims: tuple[str, SimState, str, SimState],
) -> None:
    """A failing downstream opens its breaker: logged, and shown in the stats snapshot."""
    loyalty_url, loyalty_state, _, _ = sims
    loyalty_state.config = SimConfig(mode="fail", latency_ms=0)
    async with Downstreams.from_settings(_settings(loyalty_url=loyalty_url)) as downstreams:
        with capture_logs() as logs:
            for _ in range(25):
                with pytest.raises(PatternError):
                    await downstreams.loyalty(1)
        stats = downstreams.stats()["loyalty"]
    assert stats.breaker.state is CircuitState.OPEN
    changes = [e for e in logs if e["event"] == "downstream_breaker_changed"]
    assert dict(changes[0]) == {
        "event": "downstream_breaker_changed",
        "downstream": "loyalty",
        "old": "closed",
        "new": "open",
        "log_level": "warning",
        "logger_name": "loopwise.downstreams",
    }
    assert stats.breaker.rejected > 0
    assert stats.limits.admitted < 25 * 3  # the open breaker and the retry budget held back


async def test_lifespan_opens_downstreams_in_app_state(
    database_url: str, tmp_path: Path, sims: tuple[str, SimState, str, SimState]
) -> None:
    """The app's lifespan opens the configured downstreams and hands them to requests."""
    loyalty_url, _, shipments_url, _ = sims
    settings = _settings(
        database_url=database_url,
        data_dir=tmp_path,
        loyalty_url=loyalty_url,
        shipments_url=shipments_url,
    )
    app = create_app(settings)

    @app.get("/_probe")
    async def probe(downstreams: Downstreams_) -> dict[str, object]:
        points = await downstreams.loyalty(7)
        return {"configured": sorted(downstreams.stats()), "points": points}

    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body = (await client.get("/_probe")).json()
    assert body["configured"] == ["loyalty", "shipments"]
    assert body["points"]["user_id"] == 7


def test_settings_validate_the_redis_url() -> None:
    """LOOPWISE_REDIS_URL must name Redis; empty means unset (per-process limits)."""
    assert _settings(redis_url="").redis_url is None
    assert _settings(redis_url="redis://127.0.0.1:6379/0").redis_url == "redis://127.0.0.1:6379/0"
    with pytest.raises(InvalidSettings, match=r"LOOPWISE_REDIS_URL: .*redis://"):
        _settings(redis_url="http://redis:6379")


async def test_start_up_says_whether_limits_are_shared(
    sims: tuple[str, SimState, str, SimState], redis_server: PrivateRedis
) -> None:
    """The start-up line says per process without LOOPWISE_REDIS_URL, shared with it."""
    loyalty_url, _, _, _ = sims
    said = []
    for redis_url in (None, redis_server.url):
        settings = _settings(loyalty_url=loyalty_url, redis_url=redis_url)
        with capture_logs() as logs:
            async with Downstreams.from_settings(settings) as downstreams:
                await downstreams.loyalty(1)
                stats = downstreams.stats()["loyalty"]
        said.append(next(e["limits"] for e in logs if e["event"] == "downstreams_opened"))
        assert (stats.limits.shared_in_use is None) == (redis_url is None)
    assert said == [
        "per process (LOOPWISE_REDIS_URL unset)",
        "shared by every process through redis",
    ]


async def test_two_instances_share_one_shipments_limit(
    sims: tuple[str, SimState, str, SimState], redis_server: PrivateRedis
) -> None:
    """Two instances' fan-outs at once, limit 3 through Redis: the tracker sees 3, not 6."""
    _, _, shipments_url, state = sims
    state.config = SimConfig(latency_ms=10)
    settings = _settings(
        shipments_url=shipments_url,
        shipments_concurrency=3,
        shipments_timeout=5,
        redis_url=redis_server.url,
        redis_timeout=1.0,  # sharing under test, not the fallback: a generous bound
    )
    async with Downstreams.from_settings(settings) as a, Downstreams.from_settings(settings) as b:
        found = await asyncio.gather(a.shipments(range(1, 16)), b.shipments(range(16, 31)))
    assert [len(f) for f in found] == [15, 15]
    assert state.max_in_flight == 3


async def test_redis_away_is_logged_once_and_calls_go_on(
    sims: tuple[str, SimState, str, SimState],
) -> None:
    """Redis unreachable from the start: one warning, calls pass on the process's share."""
    loyalty_url, _, _, _ = sims
    settings = _settings(loyalty_url=loyalty_url, redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    with capture_logs() as logs:
        async with Downstreams.from_settings(settings) as downstreams:
            for user in range(5):
                await downstreams.loyalty(user + 1)
            stats = downstreams.stats()["loyalty"]
    assert [e["event"] for e in logs if e["event"].startswith("shared_limits")] == [
        "shared_limits_fallback"
    ]
    assert (stats.limits.fallback, stats.limits.fallback_calls) == (True, 5)
