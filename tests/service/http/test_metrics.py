"""GET /metrics: request latency by route template, off-loop pools, the database pool."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from loopwise.patterns import BlockingPool, PoolSaturated
from loopwise.service.app import create_app
from loopwise.service.db import Database
from loopwise.service.http.metrics import Metrics
from loopwise.service.settings import Settings
from loopwise_bench.sim import SimConfig, create_sim_app
from tests.process_guard import kill_group, spawn
from tests.servers import serve_asgi


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, frozenset(labels.items()))]


def named(text: str, name: str) -> list[float]:
    """The values of every sample called ``name``, whatever its labels."""
    return [v for (sample, _), v in samples(text).items() if sample == name]


@pytest.fixture
async def items_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app plus a route with a path parameter, to see templates in labels."""
    application = create_app(settings.model_copy(update={"blocking_workers": 3}))

    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    application.add_api_route("/items/{item_id}", item)
    async with LifespanManager(application) as manager:
        app: FastAPI = manager.app  # type: ignore[assignment]  # wraps the same app
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


async def test_metrics_are_prometheus_text(client: httpx.AsyncClient) -> None:
    """/metrics answers in the Prometheus text format."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "loopwise_http_request_duration_seconds" in response.text


async def test_request_latency_is_labelled_by_route_template(
    items_client: httpx.AsyncClient,
) -> None:
    """Latency is counted per route template and status; unknown paths share one label."""
    for item_id in (1, 2, 3):
        assert (await items_client.get(f"/items/{item_id}")).status_code == 200
    assert (await items_client.get("/items/not-a-number")).status_code == 422
    assert (await items_client.get("/no/such/path")).status_code == 404
    text = (await items_client.get("/metrics")).text
    count = "loopwise_http_request_duration_seconds_count"
    assert value(text, count, method="GET", route="/items/{item_id}", status="200") == 3
    assert value(text, count, method="GET", route="/items/{item_id}", status="422") == 1
    assert value(text, count, method="GET", route="unmatched", status="404") == 1
    assert "/items/1" not in text


async def test_latency_resolves_sub_millisecond_routes(
    items_client: httpx.AsyncClient,
) -> None:
    """The request histogram has buckets from 0.1 ms, so a fast route's p50 is not 2.5 ms."""
    assert (await items_client.get("/items/1")).status_code == 200
    text = (await items_client.get("/metrics")).text
    bounds = sorted(
        float(dict(labels)["le"])
        for name, labels in samples(text)
        if name == "loopwise_http_request_duration_seconds_bucket"
        and dict(labels)["route"] == "/items/{item_id}"
    )
    assert bounds[0] == 0.0001
    assert len([b for b in bounds if b <= 0.001]) == 4


async def test_operations_stay_out_of_the_request_histogram(
    items_client: httpx.AsyncClient,
) -> None:
    """Scrapes and probes are not traffic: /metrics, /healthz, /readyz are not timed."""
    for path in ("/healthz", "/readyz", "/metrics", "/items/1"):
        assert (await items_client.get(path)).status_code == 200
    text = (await items_client.get("/metrics")).text
    routes = {
        dict(labels)["route"]
        for name, labels in samples(text)
        if name == "loopwise_http_request_duration_seconds_count"
    }
    assert routes == {"/items/{item_id}"}


async def test_exposition_has_process_and_build_but_no_created(
    items_client: httpx.AsyncClient,
) -> None:
    """process_* and loopwise_build_info are there; no *_created series clutter it."""
    assert (await items_client.get("/items/1")).status_code == 200
    text = (await items_client.get("/metrics")).text
    names = {name for name, _ in samples(text)}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= names
    assert "process_open_fds" in names
    assert named(text, "loopwise_build_info") == [1]
    assert "loopwise_http_request_duration_seconds_count" in names
    assert not [name for name in names if name.endswith("_created")]
    assert "_created" not in text


async def test_database_pool_wait_and_use_are_reported(settings: Settings) -> None:
    """A caller waiting for the only connection shows as waiting, then as a timed acquire."""
    metrics = Metrics()
    wait = "loopwise_db_pool_acquire_wait_seconds"
    async with metrics, Database(str(settings.database_url), min_size=1, max_size=1) as db:
        metrics.track("db_pool", db)
        async with db.pool.acquire():
            waiter = asyncio.create_task(db.pool.fetchval("SELECT 1"))
            # The task runs up to its wait for the connection; asyncpg's queue has no event
            # for a waiter's arrival, so yield to it until it counts itself.
            while db.stats().waiting == 0:  # noqa: ASYNC110 - no event to wait on
                await asyncio.sleep(0)
            during = metrics.render()[0].decode()
        assert await waiter == 1
        after = metrics.render()[0].decode()
    assert value(during, "loopwise_db_pool_in_use") == 1
    assert value(during, "loopwise_db_pool_waiting") == 1
    assert value(after, "loopwise_db_pool_in_use") == 0
    assert value(after, "loopwise_db_pool_waiting") == 0
    assert value(after, f"{wait}_count") == 2
    assert value(after, f"{wait}_sum") > 0
    assert value(after, f"{wait}_bucket", le="+Inf") == 2


async def test_pools_and_database_are_reported(
    items_client: httpx.AsyncClient, settings: Settings
) -> None:
    """The app's off-loop pools and its asyncpg pool appear with their bounds and usage."""
    assert (await items_client.get("/readyz")).status_code == 200  # uses a connection
    text = (await items_client.get("/metrics")).text
    assert value(text, "loopwise_offload_workers", pool="blocking") == 3
    assert value(text, "loopwise_offload_queue_limit", pool="blocking") == settings.blocking_queue
    assert value(text, "loopwise_offload_in_use", pool="blocking") == 0
    assert value(text, "loopwise_offload_completed_total", pool="blocking") >= 1  # start-up
    assert value(text, "loopwise_db_pool_max") == settings.db_pool_max
    assert value(text, "loopwise_db_pool_size") >= 1
    assert 0 <= value(text, "loopwise_db_pool_idle") <= value(text, "loopwise_db_pool_size")


async def test_pool_saturation_is_reported() -> None:
    """In-use, queued and rejected calls of a tracked pool show in the exposition."""
    metrics = Metrics()
    release = threading.Event()
    loop = asyncio.get_running_loop()
    started = asyncio.Event()

    def hold() -> None:
        loop.call_soon_threadsafe(started.set)
        release.wait(timeout=60)

    async with metrics, BlockingPool("argon2", max_workers=1, max_queue=1) as pool:
        metrics.track("offload", pool)
        running = asyncio.create_task(pool.run(hold))
        await started.wait()
        queued = asyncio.create_task(pool.run(hold))
        await asyncio.sleep(0)  # let it join the queue
        with pytest.raises(PoolSaturated):
            await pool.run(hold)
        text = metrics.render()[0].decode()
        release.set()
        await asyncio.gather(running, queued)
        after = metrics.render()[0].decode()
    assert value(text, "loopwise_offload_in_use", pool="argon2") == 1
    assert value(text, "loopwise_offload_queued", pool="argon2") == 1
    assert value(text, "loopwise_offload_rejected_total", pool="argon2") == 1
    assert value(after, "loopwise_offload_completed_total", pool="argon2") == 2
    assert value(after, "loopwise_offload_rejected_total", pool="argon2") == 1


async def test_metrics_can_be_turned_off(settings: Settings) -> None:
    """LOOPWISE_METRICS_ENABLED=false removes the route."""
    application = create_app(settings.model_copy(update={"metrics_enabled": False}))
    async with LifespanManager(application) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/metrics")).status_code == 404


@pytest.mark.blocks_loop  # starting the server process forks from the loop's thread
async def test_workers_share_one_exposition(settings: Settings, tmp_path: Path) -> None:
    """With two granian workers, whichever answers /metrics reports both (multiprocess)."""
    with socket.socket() as probe:  # a free port, released for the server to take
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "LOOPWISE_DATABASE_URL": str(settings.database_url),
        "LOOPWISE_DATA_DIR": str(tmp_path),
        "LOOPWISE_PORT": str(port),
        "LOOPWISE_WORKERS": "2",
        "LOOPWISE_BLOCKING_WORKERS": "3",
        "LOOPWISE_MIGRATE_ON_START": "false",
        "LOOPWISE_LOG_LEVEL": "warning",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = await spawn(
        str(Path(sys.executable).parent / "loopwise"),
        "serve",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            blocking_workers = 0.0
            # A bounded poll (60 s): the server is another process, and its workers took
            # 20 s to start with the load average at 13 on 2 cores.
            for _ in range(1200):
                with contextlib.suppress(httpx.TransportError, KeyError):
                    text = (await client.get("/metrics")).text
                    blocking_workers = value(text, "loopwise_offload_workers", pool="blocking")
                    if blocking_workers == 6:
                        break
                await asyncio.sleep(0.05)
            assert blocking_workers == 6  # 3 threads in each of the two workers
            for _ in range(10):
                assert (await client.get("/no/such/path")).status_code == 404
            text = (await client.get("/metrics")).text
    finally:
        server.terminate()
        await server.wait()
        kill_group(server.pid)
    count = "loopwise_http_request_duration_seconds_count"
    assert value(text, count, method="GET", route="unmatched", status="404") == 10
    assert named(text, "loopwise_build_info") == [1]  # one build, not one per worker


async def test_metrics_cover_jobs_and_downstreams(settings: Settings) -> None:
    """/metrics reports the job queue by state, the worker, and each downstream's state."""
    async with serve_asgi(create_sim_app(SimConfig(latency_ms=0))) as sim_url:
        app = create_app(settings.model_copy(update={"loyalty_url": sim_url}))
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                body = {"email": "m@example.com", "password": "correct horse", "display_name": "M"}
                assert (await client.post("/register", json=body)).status_code == 201
                login = await client.post(
                    "/login", json={"email": body["email"], "password": body["password"]}
                )
                auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
                overview = await client.get("/users/me/overview", headers=auth)
                assert overview.json()["degraded"] == []
                text = (await client.get("/metrics")).text
    jobs = sum(value(text, "loopwise_queue_jobs", state=s) for s in ("queued", "running", "done"))
    assert jobs == 1
    assert value(text, "loopwise_queue_jobs", state="dead") == 0
    assert value(text, "loopwise_queue_oldest_due_seconds") >= 0
    assert value(text, "loopwise_downstream_circuit", downstream="loyalty", state="closed") == 1
    assert value(text, "loopwise_downstream_circuit", downstream="loyalty", state="open") == 0
    assert value(text, "loopwise_downstream_admitted_total", downstream="loyalty") == 1
    assert ("loopwise_worker_jobs_running", frozenset()) in samples(text)
    assert ("loopwise_worker_jobs_completed_total", frozenset()) in samples(text)
    assert not any(name.startswith("loopwise_jobs") for name, _ in samples(text))


_GOLDEN = Path(__file__).with_name("metrics_exposition.txt")


def _masked(text: str) -> str:
    """The exposition with each sample's value replaced: names, labels and help remain."""
    lines = []
    for line in text.splitlines():
        if line.startswith("#"):
            lines.append(line)
        elif line.startswith("loopwise_build_info{"):  # the versions change, not the shape
            lines.append("loopwise_build_info{python=_,version=_} _")
        else:
            lines.append(line.rsplit(" ", 1)[0] + " _")
    return "\n".join(lines) + "\n"


async def exposition_after_a_journey(settings: Settings) -> str:
    """The /metrics text of a real app after a registration, a login and an overview."""
    async with serve_asgi(create_sim_app(SimConfig(latency_ms=0))) as sim_url:
        app = create_app(settings.model_copy(update={"loyalty_url": sim_url}))
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                body = {"email": "g@example.com", "password": "correct horse", "display_name": "G"}
                assert (await client.post("/register", json=body)).status_code == 201
                login = await client.post(
                    "/login", json={"email": body["email"], "password": body["password"]}
                )
                auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
                assert (await client.get("/users/me/overview", headers=auth)).status_code == 200
                return (await client.get("/metrics")).text


async def test_exposition_is_unchanged(settings: Settings) -> None:
    """Every family, help text and label set that /metrics serves, pinned in a golden file."""
    text = await exposition_after_a_journey(settings)
    masked = _masked(text)
    if os.environ.get("LOOPWISE_UPDATE_GOLDEN") == "1":  # after a deliberate change
        await asyncio.to_thread(_GOLDEN.write_text, masked)
    assert masked == await asyncio.to_thread(_GOLDEN.read_text)


async def test_method_and_path_floods_mint_no_series(client: httpx.AsyncClient) -> None:
    """10,000 distinct methods and paths leave the exposition's series and size as they were."""

    async def scrape() -> str:
        # Twice: the first scrape's own request appears in the second.
        await client.get("/metrics")
        return (await client.get("/metrics")).text

    before = await scrape()
    # Batches of 25: creating 250 request tasks in one step held the loop past
    # check-loop's 0.25 s in asyncio's debug mode on a busy machine.
    for start in range(0, 10_000, 25):
        await asyncio.gather(
            *(
                client.request(f"X{n}", "/healthz" if n % 2 else f"/flood/{n}")
                for n in range(start, start + 25)
            )
        )
    after = await scrape()
    series = {key for key in samples(after) if key[0].startswith("loopwise_http_request")}
    assert series - set(samples(before)) <= {
        (name, labels) for name, labels in series if dict(labels).get("method") == "OTHER"
    }
    assert all("X1" not in line for line in after.splitlines())
    # Counts grew by a few digits; series did not: a few hundred bytes, never megabytes.
    assert len(after) - len(before) < 8_000, (len(before), len(after))
    sys.stderr.write(f"\n/metrics before: {len(before)} B, after 10,000 methods: {len(after)} B\n")
