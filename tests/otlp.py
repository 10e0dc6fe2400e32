"""A real OTLP/HTTP trace receiver on 127.0.0.1, decoding protobuf with opentelemetry-proto.

    async with otlp_receiver() as receiver:      # receiver.endpoint: "http://127.0.0.1:PORT"
        ...  # point OTEL_EXPORTER_OTLP_ENDPOINT at it, run the app
        spans = await receiver.until(lambda spans: len(spans) >= 3)

An OpenTelemetry Collector does not install here; this is the protocol's server side as
the specification describes it (POST /v1/traces, ``application/x-protobuf``, an
``ExportTraceServiceResponse`` back), served by uvicorn in the test's own loop. The
exporter posts from its own thread, so the spans really cross a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from tests.servers import serve_asgi

__all__ = ["ReceivedSpan", "Receiver", "otlp_receiver", "render_tree"]


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the receiver decoded it, ids in hex."""

    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status: str


@dataclass
class Receiver:
    endpoint: str = ""
    spans: list[ReceivedSpan] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def until(
        self, check: Callable[[list[ReceivedSpan]], bool], within: float = 30.0
    ) -> list[ReceivedSpan]:
        """Wait for the spans received to satisfy ``check`` (a generous bound, not timing)."""
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: check(self.spans))
        return self.spans

    async def _receive(self, body: bytes, headers: dict[str, str]) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.headers.append(headers)
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(
                    _decoded(span, str(resource.get("service.name", "")))
                    for span in scope_spans.spans
                )
        async with self._arrived:
            self._arrived.notify_all()


def _decoded(span: ProtoSpan, service: str) -> ReceivedSpan:
    return ReceivedSpan(
        service=service,
        name=span.name,
        kind=ProtoSpan.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex(),
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        attributes={a.key: _value(a.value) for a in span.attributes},
        events=[(e.name, {a.key: _value(a.value) for a in e.attributes}) for e in span.events],
        status={0: "UNSET", 1: "OK", 2: "ERROR"}[span.status.code],
    )


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


@contextlib.asynccontextmanager
async def otlp_receiver() -> AsyncIterator[Receiver]:
    """An OTLP/HTTP receiver serving for the duration of the block."""
    receiver = Receiver()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        status = 404
        reply = b""
        if scope["method"] == "POST" and scope["path"] == "/v1/traces":
            if headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            await receiver._receive(body, headers)
            status, reply = 200, ExportTraceServiceResponse().SerializeToString()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/x-protobuf")],
            }
        )
        await send({"type": "http.response.body", "body": reply})

    async with serve_asgi(app) as url:
        receiver.endpoint = url
        yield receiver


def render_tree(spans: list[ReceivedSpan], trace_id: str) -> str:
    """The trace ``trace_id`` as an indented tree: offset and duration in ms, name, attributes."""
    mine = sorted((s for s in spans if s.trace_id == trace_id), key=lambda s: s.start_ns)
    if not mine:
        return ""
    start = mine[0].start_ns
    ids = {s.span_id for s in mine}
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for span in (s for s in mine if s.parent_id == parent):
            shown = {
                k: v
                for k, v in span.attributes.items()
                if k.startswith(("loopwise.", "http.", "server."))
            }
            events = "".join(f"\n{'  ' * (depth + 2)}· {n} {a}" for n, a in span.events)
            offset, took = (span.start_ns - start) / 1e6, (span.end_ns - span.start_ns) / 1e6
            lines.append(
                f"{offset:8.1f} ms {took:8.1f} ms  {'  ' * depth}{span.name}"
                f" [{span.service} {span.kind} {span.status}] {shown}{events}"
            )
            walk(span.span_id, depth + 1)

    for root in {s.parent_id for s in mine if s.parent_id not in ids}:
        walk(root, 0)
    return "\n".join(lines)
