"""The metrics read from the app's parts: each part is a source, snapshotted on refresh.

    sources = MetricSources(registry)
    sources.track("offload", blocking)          # anything with .stats() -> PoolStats
    sources.track("db_pool", db)                # .stats() -> DatabaseStats
    sources.track("jobs_queue", QueueDepth(db)) # async .stats() -> counts by state

Admission control, the loop watchdog, the off-loop pools, the database pool, the
downstreams, the job queue and worker, the session cache and the span exporter each report a cheap
snapshot through ``stats()``. :class:`MetricSources` keeps the sources by the metric family
they feed and copies their snapshots into its gauges and counters when
:meth:`MetricSources.refresh` runs (at scrape time, or once a second in multiprocess mode),
so nothing on the request path counts for them. Snapshots are read by their shape (the
protocols below), so this module imports none of the features it reports on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from loopwise.patterns import (
    DEFAULT_LAG_BUCKETS,
    CircuitState,
    DownstreamStats,
    LagStats,
    PoolStats,
)

__all__ = ["FAMILIES", "LATENCY_BUCKETS", "AsyncStatsSource", "MetricSources", "StatsSource"]

# Seconds, for latencies that start below a millisecond: an indexed read answers in about
# 0.3 ms here, and prometheus_client's default buckets (from 5 ms) put it at p50 2.5 ms.
# Up to 10 s, past every deadline the service sets.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

#: The metric families a source may feed: ``loopwise_<family>_*``.
FAMILIES = (
    "http_requests",
    "http_bodies",
    "event_loop",
    "offload",
    "db_pool",
    "downstream",
    "jobs",
    "jobs_queue",
    "session_cache",
    "preferences_cache",
    "tracing",
)


class StatsSource(Protocol):
    """Anything that reports a cheap snapshot of itself, read at refresh."""

    def stats(self) -> Any: ...


class AsyncStatsSource(Protocol):
    """A source whose snapshot takes a query (the job queue's depth in PostgreSQL)."""

    def stats(self) -> Awaitable[Any]: ...


class _BodyStats(Protocol):
    reading: int
    timed_out: int
    refused: int


class _GateStats(Protocol):
    in_flight: int
    queued: int
    shed: int


class _DatabaseStats(Protocol):
    max_size: int
    size: int
    idle: int
    waiting: int


@runtime_checkable
class _TimedPool(Protocol):
    """A database pool that reports each acquire's wait to ``on_acquire_wait``."""

    on_acquire_wait: Callable[[float], None] | None


class _QueueStats(Protocol):
    by_state: Mapping[str, int]
    oldest_due: float


class _WorkerStats(Protocol):
    running: int
    completed: int
    retried: int
    dead: int


class _TracingStats(Protocol):
    exported: int
    dropped_queue_full: int
    dropped_export_failed: int


class _CacheStats(Protocol):
    entries: int
    listening: bool
    hits: int
    misses: int
    invalidations: int


class MetricSources:
    """The metrics fed by the app's parts, in ``registry``.

    Sources are read when metrics are refreshed; register them as the lifespan opens them.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            # livesum: across workers, the total of the live processes' values.
            return Gauge(name, doc, labels, registry=r, multiprocess_mode="livesum")

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=r)

        def counters(
            prefix: str, docs: Mapping[str, str], labels: tuple[str, ...] = ()
        ) -> dict[str, Counter]:
            return {what: counter(prefix + what, doc, labels) for what, doc in docs.items()}

        self._http_in_flight = gauge(
            "loopwise_http_requests_in_flight", "Requests admitted and not yet answered."
        )
        self._http_queued = gauge(
            "loopwise_http_requests_queued", "Requests waiting for an admission slot."
        )
        self._http_shed = counter(
            "loopwise_http_requests_shed", "Requests answered 503 at the door."
        )
        self._bodies_reading = gauge(
            "loopwise_http_bodies_reading", "Request bodies arriving, read before admission."
        )
        self._body_timeouts = counter(
            "loopwise_http_body_timeouts", "Requests answered 408: body too slow."
        )
        self._bodies_refused = counter(
            "loopwise_http_bodies_refused", "Requests answered 503: every reader busy."
        )
        self.loop_lag = Histogram(
            "loopwise_event_loop_lag_seconds",
            "How late the event loop ran the watchdog's heartbeat.",
            buckets=DEFAULT_LAG_BUCKETS,
            registry=r,
        )
        self._stalls = counter(
            "loopwise_event_loop_stalls", "Loop stalls past the watchdog threshold."
        )
        self._workers = gauge("loopwise_offload_workers", "Workers of a pool.", ("pool",))
        self._in_use = gauge("loopwise_offload_in_use", "Workers busy.", ("pool",))
        self._queued = gauge("loopwise_offload_queued", "Callers waiting.", ("pool",))
        self._queue_limit = gauge("loopwise_offload_queue_limit", "Queue bound.", ("pool",))
        self._rejected = counter(
            "loopwise_offload_rejected", "Calls refused as saturated.", ("pool",)
        )
        self._completed = counter(
            "loopwise_offload_completed", "Calls finished in a worker.", ("pool",)
        )
        self._db_max = gauge("loopwise_db_pool_max", "Most connections the pool may open.")
        self._db_size = gauge("loopwise_db_pool_size", "Connections open.")
        self._db_idle = gauge("loopwise_db_pool_idle", "Connections open and idle.")
        self._db_in_use = gauge("loopwise_db_pool_in_use", "Connections lent out.")
        self._db_waiting = gauge(
            "loopwise_db_pool_waiting", "Callers waiting for a connection to free up."
        )
        # Not a snapshot: the pool observes each acquire's wait itself (``on_acquire_wait``).
        self._db_acquire_wait = Histogram(
            "loopwise_db_pool_acquire_wait_seconds",
            "Time to get a connection from the pool, timed-out acquires included.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._circuit = gauge(
            "loopwise_downstream_circuit",
            "1 for each breaker's current state.",
            ("downstream", "state"),
        )
        self._ds_in_use = gauge("loopwise_downstream_in_use", "Calls in flight.", ("downstream",))
        self._ds_waiting = gauge(
            "loopwise_downstream_waiting", "Calls waiting for a slot.", ("downstream",)
        )
        # Shared limits (LOOPWISE_REDIS_URL): every process reports the same count, as
        # Redis last told it (aggregate with max). 0 with per-process limits.
        self._ds_shared_in_use = Gauge(
            "loopwise_downstream_shared_in_use",
            "Slots held by every process together, as Redis last said.",
            ["downstream"],
            registry=r,
            multiprocess_mode="max",
        )
        self._ds_fallback = gauge(
            "loopwise_downstream_fallback",
            "1 while shared limits run on this process's share (Redis away).",
            ("downstream",),
        )
        self._ds_counters = counters(
            "loopwise_downstream_",
            {
                "fallback_calls": "Calls admitted on the per-process share, Redis away.",
                "admitted": "Calls let through the limits.",
                "rejected": "Calls refused by the limits or an open breaker.",
                "retries": "Retries made.",
                "retries_denied": "Retries the retry budget refused.",
            },
            ("downstream",),
        )
        # loopwise_queue_*: the queue is one table for every process, so every instance
        # reports the same values (aggregate with max, not sum). loopwise_worker_*: this
        # process's own job worker (sum across instances).
        self._queue_jobs = Gauge(
            "loopwise_queue_jobs",
            "Jobs in the queue by state, every instance's (read from PostgreSQL).",
            ["state"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self._queue_oldest = Gauge(
            "loopwise_queue_oldest_due_seconds",
            "Age of the oldest job due and not claimed yet, every instance's; 0 when none.",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self._jobs_running = gauge(
            "loopwise_worker_jobs_running", "Jobs this process's worker is running."
        )
        self._job_counters = counters(
            "loopwise_worker_jobs_",
            {
                "completed": "Jobs this process completed.",
                "retried": "Attempts that failed and were scheduled again.",
                "dead": "Jobs that ran out of attempts.",
            },
        )
        self._sessions_entries = gauge("loopwise_session_cache_entries", "Sessions in memory.")
        self._sessions_listening = gauge(
            "loopwise_session_cache_listening", "1 while changes are heard (cache in use)."
        )
        self._session_counters = counters(
            "loopwise_session_cache_",
            {
                "hits": "Requests authenticated from memory.",
                "misses": "Requests authenticated by a query.",
                "invalidations": "Changes announced by PostgreSQL and applied.",
            },
        )
        # Heard on the session cache's connection: its `listening` is this cache's too.
        self._preferences_entries = gauge(
            "loopwise_preferences_cache_entries", "Preferences documents in memory."
        )
        self._preferences_counters = counters(
            "loopwise_preferences_cache_",
            {
                "hits": "Preferences read from memory.",
                "misses": "Preferences read by a query.",
                "invalidations": "Preferences changes announced by PostgreSQL and applied.",
            },
        )
        self._spans_exported = counter(
            "loopwise_tracing_spans_exported", "Spans the OTLP exporter delivered."
        )
        self._spans_dropped = counter(
            "loopwise_tracing_spans_dropped",
            "Spans lost: the export queue was full, or the collector refused or was down.",
            ("reason",),
        )
        self._sources: dict[str, list[StatsSource]] = {family: [] for family in FAMILIES}
        # Counters only go up: the refresh adds what a snapshot gained since the last one.
        self._seen: dict[tuple[str, str], float] = {}

    def track(self, family: str, source: StatsSource | AsyncStatsSource) -> None:
        """Feed ``loopwise_<family>_*`` from ``source.stats()`` at every refresh.

        Raises:
            ValueError: ``family`` is not one of :data:`FAMILIES`.
        """
        if family not in self._sources:
            raise ValueError(f"`family` must be one of {', '.join(FAMILIES)}; got {family!r}")
        self._sources[family].append(source)
        if family == "db_pool" and isinstance(source, _TimedPool):
            source.on_acquire_wait = self._db_acquire_wait.observe

    async def refresh_queue(self) -> None:
        """Read the queue's state from PostgreSQL, within a second; stale beats no answer."""
        for source in self._sources["jobs_queue"]:
            with contextlib.suppress(TimeoutError, RuntimeError, OSError, asyncpg.PostgresError):
                async with asyncio.timeout(1.0):
                    queue: _QueueStats = await source.stats()
                for state, count in queue.by_state.items():
                    self._queue_jobs.labels(state).set(count)
                self._queue_oldest.set(queue.oldest_due)

    def refresh(self) -> None:
        """Copy the tracked sources' current state into the metrics."""
        for source in self._sources["downstream"]:
            self._refresh_downstreams(source.stats())
        for source in self._sources["jobs"]:
            self._refresh_worker(source.stats())
        for source in self._sources["offload"]:
            self._refresh_pool(source.stats())
        for source in self._sources["http_requests"]:
            self._refresh_gate(source.stats())
        for source in self._sources["event_loop"]:
            lag: LagStats = source.stats()
            self._advance(self._stalls, ("stalls", ""), lag.stalls)
        for source in self._sources["http_bodies"]:
            reads: _BodyStats = source.stats()
            self._bodies_reading.set(reads.reading)
            self._advance(self._body_timeouts, ("body_timeouts", ""), reads.timed_out)
            self._advance(self._bodies_refused, ("bodies_refused", ""), reads.refused)
        for source in self._sources["session_cache"]:
            sessions: _CacheStats = source.stats()
            self._sessions_entries.set(sessions.entries)
            self._sessions_listening.set(sessions.listening)
            self._refresh_cache("sessions", self._session_counters, sessions)
        for source in self._sources["preferences_cache"]:
            documents: _CacheStats = source.stats()
            self._preferences_entries.set(documents.entries)
            self._refresh_cache("preferences", self._preferences_counters, documents)
        for source in self._sources["tracing"]:
            self._refresh_tracing(source.stats())
        for source in self._sources["db_pool"]:
            with contextlib.suppress(RuntimeError):  # not open yet, or closed already
                self._refresh_database(source.stats())

    def _refresh_worker(self, worker: _WorkerStats) -> None:
        self._jobs_running.set(worker.running)
        for what in ("completed", "retried", "dead"):
            self._advance(self._job_counters[what], ("jobs", what), getattr(worker, what))

    def _refresh_pool(self, stats: PoolStats) -> None:
        name = stats.name
        self._workers.labels(name).set(stats.max_workers)
        self._in_use.labels(name).set(stats.in_use)
        self._queued.labels(name).set(stats.queued)
        self._queue_limit.labels(name).set(stats.max_queue)
        self._advance(self._rejected.labels(name), ("rejected", name), stats.rejected)
        self._advance(self._completed.labels(name), ("completed", name), stats.completed)

    def _refresh_gate(self, gate: _GateStats) -> None:
        # Read here, never counted on the request path: a shed costs one increment.
        self._http_in_flight.set(gate.in_flight)
        self._http_queued.set(gate.queued)
        self._advance(self._http_shed, ("shed", ""), gate.shed)

    def _refresh_cache(self, cache: str, totals: Mapping[str, Counter], stats: _CacheStats) -> None:
        for what, counter in totals.items():
            self._advance(counter, (cache, what), getattr(stats, what))

    def _refresh_tracing(self, spans: _TracingStats) -> None:
        self._advance(self._spans_exported, ("spans", "exported"), spans.exported)
        for reason, total in (
            ("queue_full", spans.dropped_queue_full),
            ("export_failed", spans.dropped_export_failed),
        ):
            self._advance(self._spans_dropped.labels(reason), ("spans_dropped", reason), total)

    def _refresh_database(self, db: _DatabaseStats) -> None:
        self._db_max.set(db.max_size)
        self._db_size.set(db.size)
        self._db_idle.set(db.idle)
        self._db_in_use.set(db.size - db.idle)
        self._db_waiting.set(db.waiting)

    def _refresh_downstreams(self, downstreams: Mapping[str, DownstreamStats]) -> None:
        for name, stats in downstreams.items():
            for state in CircuitState:
                self._circuit.labels(name, state.value).set(stats.breaker.state is state)
            keys = stats.limits.keys.values()
            self._ds_in_use.labels(name).set(sum(k.in_use for k in keys))
            self._ds_waiting.labels(name).set(sum(k.waiting for k in keys))
            self._ds_shared_in_use.labels(name).set(stats.limits.shared_in_use or 0)
            self._ds_fallback.labels(name).set(stats.limits.fallback)
            totals = {
                "fallback_calls": stats.limits.fallback_calls,
                "admitted": stats.limits.admitted,
                "rejected": stats.limits.rejected + stats.breaker.rejected,
                "retries": stats.retry_budget.retries,
                "retries_denied": stats.retry_budget.denied,
            }
            for what, total in totals.items():
                counter = self._ds_counters[what].labels(name)
                self._advance(counter, (f"downstream_{what}", name), total)

    def _advance(self, counter: Counter, key: tuple[str, str], total: float) -> None:
        gained = total - self._seen.get(key, 0)
        if gained > 0:
            counter.inc(gained)
            self._seen[key] = total
