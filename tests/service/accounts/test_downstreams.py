"""The service's downstreams: settings, typed calls, fallbacks on time, lifespan, stats."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from structlog.testing import capture_logs

from loopwise.patterns import CircuitState, deadline
from loopwise.service.accounts.downstreams import Downstreams, LoyaltyPoints
from loopwise.service.app import create_app
from loopwise.service.deps import Downstreams_
from loopwise.service.settings import InvalidSettings, Settings, load_settings
from loopwise_bench.sim import SimConfig, SimState, create_sim_app
from tests.servers import closed_port, serve_asgi


def _settings(**values: Any) -> Settings:
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


async def test_unconfigured_downstreams_are_absent_not_degraded() -> None:
    """Without URLs, both calls return empty parts that are not degraded."""
    async with Downstreams.from_settings(_settings()) as downstreams:
        loyalty = await downstreams.loyalty(1)
        shipments = await downstreams.shipments([1, 2])
        assert downstreams.stats() == {}
    assert (loyalty.value, loyalty.degraded) == (None, False)
    assert (shipments.value, shipments.degraded) == ([], False)


async def test_healthy_downstreams_answer_typed(
    sims: tuple[str, SimState, str, SimState],
) -> None:
    """Healthy downstreams give typed models; shipments come one call per order, in order."""
    loyalty_url, _, shipments_url, shipments_state = sims
    settings = _settings(loyalty_url=loyalty_url, shipments_url=shipments_url)
    async with Downstreams.from_settings(settings) as downstreams:
        loyalty = await downstreams.loyalty(42)
        shipments = await downstreams.shipments([5, 3, 9])
    assert isinstance(loyalty.value, LoyaltyPoints)
    assert loyalty.value.user_id == 42
    assert not loyalty.degraded
    assert [s.order_id for s in shipments.value] == [5, 3, 9]
    assert not shipments.degraded
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
    assert len(shipments.value) == 30
    assert state.max_in_flight == 3


async def test_dead_and_slow_downstreams_fall_back_on_time(
    sims: tuple[str, SimState, str, SimState],
) -> None:
    """One refusing and one hanging downstream: both degrade, within the request's budget."""
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
        async with deadline(0.5), asyncio.TaskGroup() as group:
            loyalty = group.create_task(downstreams.loyalty(1))
            shipments = group.create_task(downstreams.shipments([1, 2, 3]))
        elapsed = loop.time() - started
    assert loyalty.result().degraded
    assert "DownstreamUnreachable" in (loyalty.result().reason or "")
    assert shipments.result().degraded
    assert shipments.result().value == []
    assert elapsed < 0.5 + 0.05, elapsed


async def test_own_timeout_bounds_each_downstream(
    sims: tuple[str, SimState, str, SimState],
) -> None:
    """Without a request deadline, a slow downstream costs its own timeout, then falls back."""
    loyalty_url, loyalty_state, _, _ = sims
    loyalty_state.config = SimConfig(mode="hang")
    settings = _settings(loyalty_url=loyalty_url, loyalty_timeout=0.1)
    loop = asyncio.get_running_loop()
    async with Downstreams.from_settings(settings) as downstreams:
        started = loop.time()
        part = await downstreams.loyalty(1)
        elapsed = loop.time() - started
    assert part.degraded
    assert elapsed < 0.1 + 0.05, elapsed


async def test_unknown_user_is_not_degraded(sims: tuple[str, SimState, str, SimState]) -> None:
    """A 404 from the loyalty service means no account: None, not a fallback."""
    loyalty_url, _, _, _ = sims
    async with Downstreams.from_settings(_settings(loyalty_url=loyalty_url)) as downstreams:
        part = await downstreams.loyalty(0)  # the simulator knows no user 0: 404
    assert (part.value, part.degraded) == (None, False)


async def test_breaker_changes_are_logged_and_visible(
    sims: tuple[str, SimState, str, SimState],
) -> None:
    """A failing downstream opens its breaker: logged, and shown in the stats snapshot."""
    loyalty_url, loyalty_state, _, _ = sims
    loyalty_state.config = SimConfig(mode="fail", latency_ms=0)
    async with Downstreams.from_settings(_settings(loyalty_url=loyalty_url)) as downstreams:
        with capture_logs() as logs:
            for _ in range(25):
                assert (await downstreams.loyalty(1)).degraded
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
        part = await downstreams.loyalty(7)
        return {"configured": sorted(downstreams.stats()), "points": part.value}

    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body = (await client.get("/_probe")).json()
    assert body["configured"] == ["loyalty", "shipments"]
    assert body["points"]["user_id"] == 7
