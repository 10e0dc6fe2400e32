"""OpenTelemetry tracing: the SDK and OTLP exporter per process, and a span per request.

    async with Tracing() as tracing:      # OTEL_* from the environment, as the SDK reads them
        app.add_middleware(TraceRequests)  # one SERVER span per request

Configured by the standard variables: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (OTLP/HTTP protobuf),
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME`` (``loopwise`` when unset),
``OTEL_TRACES_SAMPLER``/``_ARG`` (``parentbased_always_on`` when unset) and
``OTEL_BSP_MAX_QUEUE_SIZE``. Only when ``LOOPWISE_OTEL_ENABLED`` is on: off, no SDK is
built and no middleware added, so a request does no tracing work at all.

Spans leave the loop at once: a ``BatchSpanProcessor`` queues them and its own thread
exports them. The queue is bounded; a span that finds it full is dropped and counted
(``loopwise_tracing_spans_dropped_total{reason="queue_full"}``), as are the spans of a
batch the exporter could not deliver (``reason="export_failed"``). A request never waits
for the collector.

The SDK (``span_export.py``) is imported only then. Its processor thread does not survive
``fork``, so the provider is built in the lifespan (in each granian worker, after the
fork) and shut down with it, flushing for at most ``shutdown_timeout`` seconds, off the
loop.

OpenTelemetry's global tracer provider is process-wide and can be set once; the toolkit
(``loopwise.patterns``) asks the global API for its tracer, as libraries do. So the global
is a switch (:class:`_CurrentProvider`) installed once, pointing at the open
:class:`Tracing`'s provider, or at nothing when none is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loopwise.patterns.lifecycle import AsyncResource

if TYPE_CHECKING:  # the SDK is imported only when tracing opens (span_export.py)
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from loopwise.service.span_export import BoundedQueue, TracingStats

__all__ = ["TraceRequests", "Tracing", "current_traceparent", "job_context"]

T = TypeVar("T")


class Tracing(AsyncResource):
    """This process's tracer provider, OTLP exporter and batching thread.

    Args:
        exporter: where spans go; an ``OTLPSpanExporter`` configured from ``OTEL_*`` when None.
        shutdown_timeout: seconds the close may spend flushing what is queued: a healthy
            collector takes one round trip; a dead one would hold the exit for the
            exporter's 10 s of retries.
    """

    def __init__(
        self, *, exporter: SpanExporter | None = None, shutdown_timeout: float = 2.0
    ) -> None:
        self._exporter = exporter
        self._shutdown_timeout = shutdown_timeout
        self._provider: TracerProvider | None = None
        self._queue: BoundedQueue | None = None

    async def _aopen(self) -> None:
        # Off the loop: the SDK's first import reads files, and Resource.create runs its
        # detectors on a thread pool and joins it.
        built = await _in_a_thread(lambda: _build(self._exporter))
        assert built is not None  # no time limit: it always returns
        provider, self._queue = built
        self._provider = provider
        _SWITCH.point_at(provider)

    async def _aclose(self) -> None:
        provider, self._provider = self._provider, None
        if provider is None:
            return
        _SWITCH.point_away(provider)
        await _in_a_thread(provider.shutdown, within=self._shutdown_timeout)

    def stats(self) -> TracingStats:
        if self._queue is None:
            from loopwise.service.span_export import TracingStats

            return TracingStats(0, 0, 0)
        return self._queue.stats()


def _build(exporter: SpanExporter | None) -> tuple[TracerProvider, BoundedQueue]:
    from loopwise.service.span_export import build_provider

    return build_provider(exporter)


async def _in_a_thread(blocking: Callable[[], T], *, within: float | None = None) -> T | None:
    """Run ``blocking`` in a daemon thread of its own; its result, or None after ``within``.

    Twice per process (open, close), so a one-off thread rather than a pool. The SDK's
    shutdown joins its export thread for up to 30 s, and the exporter retries an
    unreachable collector for ``OTEL_EXPORTER_OTLP_TIMEOUT`` (10 s): a stopping worker
    must not wait that long, and a daemon thread does not hold the interpreter's exit.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        try:
            result = blocking()
        except BaseException as exc:  # handed to the waiting task, raised there
            error = exc  # `exc` is unbound when the except block ends; the callback runs later
            _hand_over(loop, done, lambda: done.set_exception(error))
        else:
            _hand_over(loop, done, lambda: done.set_result(result))

    threading.Thread(target=run, name="loopwise-tracing", daemon=True).start()
    try:
        return await asyncio.wait_for(done, within)
    except TimeoutError:
        return None


def _hand_over(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], settle: Callable[[], None]
) -> None:
    def on_loop() -> None:
        if not future.done():  # not given up on by wait_for
            settle()

    with contextlib.suppress(RuntimeError):  # the loop closed first: nobody waits
        loop.call_soon_threadsafe(on_loop)


class _CurrentProvider(trace.TracerProvider):
    """The process's global tracer provider: the open :class:`Tracing`'s, or none.

    Installed the first time tracing opens; OpenTelemetry refuses to replace a global
    provider, and tracers handed out earlier (the toolkit's) must follow each new one.
    """

    def __init__(self) -> None:
        self.sdk: TracerProvider | None = None
        self._installed = False

    def point_at(self, provider: TracerProvider) -> None:
        if not self._installed:
            trace.set_tracer_provider(self)  # warns, and changes nothing, if one is set
            self._installed = True
        self.sdk = provider

    def point_away(self, provider: TracerProvider) -> None:
        if self.sdk is provider:
            self.sdk = None

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Any = None,
    ) -> trace.Tracer:
        return _CurrentTracer(self, instrumenting_module_name)


class _CurrentTracer(trace.Tracer):
    """A tracer of whichever SDK provider is current; no-op spans while there is none."""

    def __init__(self, switch: _CurrentProvider, name: str) -> None:
        self._switch, self._name = switch, name
        self._cached: tuple[TracerProvider, trace.Tracer] | None = None

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Any = None,
        links: Any = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        provider = self._switch.sdk
        if provider is None:
            return trace.INVALID_SPAN
        cached = self._cached
        if cached is None or cached[0] is not provider:
            cached = self._cached = (provider, provider.get_tracer(self._name))
        return cached[1].start_span(
            name, context, kind, attributes, links, start_time, record_exception,
            set_status_on_exception,
        )  # fmt: skip

    # The API types this with a private decorator's return type (``_AgnosticContextManager``,
    # usable sync and async); a plain context manager is what every caller here uses.
    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Any = None,
        links: Any = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception,
            set_status_on_exception,
        )  # fmt: skip
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


# OpenTelemetry's global provider is one per process by design; so is this switch.
_SWITCH = _CurrentProvider()


class _ScopeHeaders(Getter[list[tuple[bytes, bytes]]]):
    """Reads ``traceparent``/``tracestate`` straight from the ASGI scope's header list."""

    def get(self, carrier: list[tuple[bytes, bytes]], key: str) -> list[str] | None:
        wanted = key.encode()
        values = [value.decode("latin-1") for name, value in carrier if name == wanted]
        return values or None

    def keys(self, carrier: list[tuple[bytes, bytes]]) -> list[str]:
        return [name.decode("latin-1") for name, _ in carrier]


_HEADERS = _ScopeHeaders()


class TraceRequests:
    """One SERVER span per HTTP request: ``GET /users/{id}``, its status and request id.

    Continues the caller's trace when the request carries ``traceparent``. Outside
    ``RequestLog``, so the access log line is written inside the span and carries its
    ids, and the request id is read from the response that ``RequestLog`` labelled.
    Added only when tracing is on: off, this costs nothing because it is not there.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._tracer = trace.get_tracer("loopwise.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        parent = propagate.extract(scope["headers"], getter=_HEADERS)
        span = self._tracer.start_span(method, parent, SpanKind.SERVER)
        # Current even when not sampled: its traceparent (flags 00) still reaches the
        # downstreams and the jobs, which then do not sample either.
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        recording = span.is_recording()
        status = 500

        async def send_traced(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if recording:
                    for name, value in message.get("headers", ()):
                        if name == b"x-request-id":
                            span.set_attribute("loopwise.request_id", value.decode("latin-1"))
            await send(message)

        try:
            await self.app(scope, receive, send_traced)
        except Exception as exc:
            span.record_exception(exc)
            raise
        finally:
            if recording:
                _finish(span, scope, method, status)
            span.end()
            otel_context.detach(token)


def _finish(span: trace.Span, scope: Scope, method: str, status: int) -> None:
    route = getattr(scope.get("route"), "path_format", None)
    if route is not None:
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
    span.set_attribute("http.request.method", method)
    span.set_attribute("url.path", scope["path"])
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(StatusCode.ERROR)


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the span in force, or None outside any trace."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}"
        f"-{span_context.trace_flags:02x}"
    )


def job_context(traceparent: str | None) -> otel_context.Context | None:
    """The context to start a job's span in: the enqueuing request's, if it had one."""
    if traceparent is None:
        return None
    return propagate.extract({"traceparent": traceparent})
