"""The OpenTelemetry SDK's side of tracing: the provider, the bounded queue, the exporter.

    provider, queue = build_provider()   # OTEL_* from the environment; starts the export thread
    queue.stats()                        # TracingStats(exported=..., dropped_queue_full=...)

Imported only when tracing is on (``tracing.Tracing`` opens it, off the loop): the SDK,
protobuf and requests cost a worker process ~0.3 s of start-up here (``python -X
importtime``, load average 14), which a process with tracing off should not pay.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

__all__ = ["BoundedQueue", "TracingStats", "build_provider"]

# The SDK's own default queue (OTEL_BSP_MAX_QUEUE_SIZE), and its largest batch.
_DEFAULT_QUEUE = 2048
_DEFAULT_BATCH = 512


@dataclass(frozen=True, slots=True)
class TracingStats:
    """Spans handed to the exporter, and spans lost, by why."""

    exported: int
    dropped_queue_full: int
    dropped_export_failed: int


def build_provider(
    exporter: SpanExporter | None = None,
) -> tuple[TracerProvider, BoundedQueue]:
    """A tracer provider configured from ``OTEL_*``, exporting through a bounded queue."""
    if exporter is None:
        # Imported here: only a process that exports pays for protobuf and requests.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    queue = int(os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE", _DEFAULT_QUEUE))
    # OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name the service; else "loopwise",
    # not the SDK's "unknown_service".
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "loopwise"}))
    provider = TracerProvider(resource=resource)
    processor = BoundedQueue(exporter, queue)
    provider.add_span_processor(processor)
    return provider, processor


class BoundedQueue(SpanProcessor):
    """A ``BatchSpanProcessor`` that counts what it hands on and what it loses.

    The SDK's processor drops the *oldest* span when its queue is full and only logs it,
    a warning per span (thousands a second with the collector down). This gate keeps the
    queue from overflowing instead: a span that would overflow it is counted and dropped
    here, so the SDK's queue never logs, and /metrics shows the loss.
    """

    def __init__(self, exporter: SpanExporter, queue: int) -> None:
        self._limit = queue
        self._lock = threading.Lock()  # the loop adds, the export thread takes away
        self._pending = 0
        self.exported = self.dropped = self.failed = 0
        self._batch = BatchSpanProcessor(
            _CountingExporter(exporter, self),
            max_queue_size=queue,
            max_export_batch_size=min(_DEFAULT_BATCH, queue),
        )

    def on_end(self, span: ReadableSpan) -> None:
        if not span.context.trace_flags.sampled:
            return
        with self._lock:
            if self._pending >= self._limit:
                self.dropped += 1
                return
            self._pending += 1
        self._batch.on_end(span)

    def stats(self) -> TracingStats:
        return TracingStats(self.exported, self.dropped, self.failed)

    def taken(self, count: int) -> None:
        with self._lock:
            self._pending -= count

    def shutdown(self) -> None:
        self._batch.shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._batch.force_flush(timeout_millis)


class _CountingExporter(SpanExporter):
    """Tells the gate a batch left the queue; counts delivered and failed spans."""

    def __init__(self, exporter: SpanExporter, gate: BoundedQueue) -> None:
        self._exporter, self._gate = exporter, gate

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._gate.taken(len(spans))
        result = self._exporter.export(spans)
        if result is SpanExportResult.SUCCESS:
            self._gate.exported += len(spans)
        else:
            self._gate.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)
