"""Prometheus metrics: ``GET /metrics`` on the main port, from a registry the app owns.

    loopwise_http_request_duration_seconds{method,route,status}   latency by route template,
                                        from 0.1 ms; /metrics and the probes are not in it
    loopwise_http_requests_{in_flight,queued}, _shed_total          admission control's gate
    loopwise_http_bodies_reading, loopwise_http_body_timeouts_total,
    loopwise_http_bodies_refused_total                              bodies read before admission
    loopwise_event_loop_lag_seconds                                 the watchdog's lag samples
    loopwise_event_loop_stalls_total                                stalls past the threshold
    loopwise_offload_{workers,in_use,queued,queue_limit}{pool}      off-loop pool saturation
    loopwise_offload_{rejected,completed}_total{pool}
    loopwise_db_pool_{max,size,idle,in_use,waiting}                 asyncpg connections
    loopwise_db_pool_acquire_wait_seconds                           time to get a connection
    loopwise_downstream_circuit{downstream,state}                   1 for the breaker's state
    loopwise_downstream_{in_use,waiting}{downstream}                per-host limit saturation
    loopwise_downstream_{admitted,rejected,retries,retries_denied}_total{downstream}
    loopwise_queue_jobs{state}, loopwise_queue_oldest_due_seconds   the queue: every instance's,
                                        read from PostgreSQL (aggregate with max, not sum)
    loopwise_worker_jobs_running, loopwise_worker_jobs_{completed,retried,dead}_total
                                        this process's job worker (sum across instances)
    loopwise_session_cache_{entries,listening}                     sessions in memory
    loopwise_session_cache_{hits,misses,invalidations}_total
    loopwise_tracing_spans_exported_total                          with LOOPWISE_OTEL_ENABLED:
    loopwise_tracing_spans_dropped_total{reason}                   queue_full, export_failed
    loopwise_build_info{version,python}                             1, labelled with the build
    process_*                                                       CPU, memory, open files

No ``*_created`` series: prometheus_client adds one per counter and histogram child, which
Prometheus does not use (it detects resets itself) and which doubles the series count. They
are dropped from this registry's exposition, not switched off for the whole process.

Main port, not a separate one: it is one listener per instance to run and secure, and a
scrape crosses the same event loop as the traffic, so a stalled loop also shows as a slow
scrape. Keep ``/metrics`` off the public ingress at the proxy, as with ``/readyz``.

``process_*`` describe the process that answers; in multiprocess mode that is one worker
of several, so they are left out there (the container's own metrics cover it).

Several granian workers (``LOOPWISE_WORKERS>1``) are processes sharing the port, so a
scrape reaches one of them at random. ``loopwise serve`` then turns on prometheus_client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``): every worker writes its values to files
and whichever one answers reports the sum. Gauges read from live objects (pools, the
database) are written by each worker once a second in that mode; in a single process they
are read at scrape time and exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import platform
from collections.abc import Iterable

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, Gauge, Histogram, ProcessCollector, multiprocess
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from starlette.types import Scope

from loopwise.patterns.lifecycle import AsyncResource
from loopwise.service.http.metric_sources import (
    LATENCY_BUCKETS,
    AsyncStatsSource,
    MetricSources,
    StatsSource,
)

__all__ = ["Metrics", "metrics_router"]


_REFRESH_EVERY = 1.0  # seconds, multiprocess mode only

# The methods a label may name; any other string a client sends is counted as "OTHER".
# RFC 9110 section 9 plus PATCH (RFC 5789): the method is client input, and a label value
# taken from it unchecked minted a series per string (10,000 made /metrics 600x larger,
# and each scrape then held the loop for seconds rendering them).
_KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)

# Scraped every few seconds by every Prometheus and balancer: timing them would drown the
# traffic's latency in the operations' own. Their failures show in the probes themselves.
_UNTIMED = frozenset({"/metrics", "/healthz", "/readyz"})

_CREATED_IN = frozenset({"counter", "histogram", "summary"})


def _version() -> str:
    try:
        return importlib.metadata.version("loopwise")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


# Read once at import: the installed distribution's metadata is files on disk, and the
# app is built inside running event loops (tests, granian's workers).
_BUILD = (_version(), platform.python_version())


class _Registry(CollectorRegistry):
    """A registry whose exposition leaves out the ``*_created`` samples.

    prometheus_client only offers a process-wide switch for them
    (``disable_created_metrics``), which would reach every registry in the process,
    a library's or a test's included.
    """

    def collect(self) -> Iterable[Metric]:
        for family in super().collect():
            if family.type in _CREATED_IN:
                created = family.name + "_created"
                family.samples = [s for s in family.samples if s.name != created]
            yield family


class Metrics(AsyncResource):
    """The app's metrics: created with the app, fed by its middleware and its lifespan.

    The middleware observes each request (:meth:`observe_request`); what the lifespan
    opens is tracked as a source of one metric family (:meth:`track`):

        metrics.track("offload", blocking)     # loopwise_offload_*{pool="blocking"}
        metrics.track("db_pool", db)           # loopwise_db_pool_*
    """

    def __init__(self) -> None:
        self.multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        self.registry = _Registry()
        self.request_duration = Histogram(
            "loopwise_http_request_duration_seconds",
            "Time to answer a request, by route template and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        build = Gauge(
            "loopwise_build_info",
            "Always 1; the labels name the running build.",
            ["version", "python"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        build.labels(*_BUILD).set(1)
        if not self.multiprocess:
            ProcessCollector(registry=self.registry)
        self._sources = MetricSources(self.registry)
        # Not a snapshot: the watchdog observes each lag sample itself (``on_lag``).
        self.loop_lag = self._sources.loop_lag
        self._refresher: asyncio.Task[None] | None = None
        self._latency_by_key: dict[tuple[str, str, int], Histogram] = {}

    def track(self, family: str, source: StatsSource | AsyncStatsSource) -> None:
        """Feed ``loopwise_<family>_*`` from ``source.stats()`` whenever metrics refresh.

        Raises:
            ValueError: ``family`` is not a family these metrics define.
        """
        self._sources.track(family, source)

    def refresh(self) -> None:
        """Copy every tracked source's snapshot into the metrics."""
        self._sources.refresh()

    async def refresh_queue(self) -> None:
        """Read the job queue's depth from PostgreSQL, within a second."""
        await self._sources.refresh_queue()

    def observe_request(self, scope: Scope, status: int, seconds: float) -> None:
        """Count one request by its route template; ``RequestLog`` calls this.

        The template (``/users/{id}``), never the raw path, keeps the label set bounded;
        requests no route matched share ``route="unmatched"``, and methods outside RFC 9110's
        share ``method="OTHER"``, so no client can mint series. FastAPI's router puts the
        matched route in the scope, which is shared with the middleware around it.
        """
        route = getattr(scope.get("route"), "path_format", None) or "unmatched"
        if route in _UNTIMED:
            return
        method = scope["method"]
        if method not in _KNOWN_METHODS:
            method = "OTHER"
        key = (method, route, status)
        child = self._latency_by_key.get(key)
        if child is None:  # labels() locks and validates: do it once per key
            child = self.request_duration.labels(method, route, str(status))
            self._latency_by_key[key] = child
        child.observe(seconds)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition the scraper asked for (``Accept``) and its content type.

        This process's values, or every worker's in multiprocess mode.
        """
        self.refresh()
        encode, content_type = choose_encoder(accept)
        if not self.multiprocess:
            return encode(self.registry), content_type
        merged = _Registry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]  # untyped upstream
        return encode(merged), content_type

    async def _aopen(self) -> None:
        if self.multiprocess:
            self._refresher = asyncio.create_task(self._refresh_forever(), name="metrics")

    async def _aclose(self) -> None:
        """Stop refreshing; in multiprocess mode, drop this worker's live gauges."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]  # untyped upstream

    async def _refresh_forever(self) -> None:
        while True:
            self.refresh()
            await asyncio.sleep(_REFRESH_EVERY)


def metrics_router(app_metrics: Metrics) -> APIRouter:
    """``GET /metrics`` for the metrics the app was built with."""
    router = APIRouter(tags=["operations"])

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """Prometheus text format."""
        await app_metrics.refresh_queue()
        body, content_type = app_metrics.render(request.headers.get("accept", ""))
        return Response(body, headers={"content-type": content_type})

    return router
