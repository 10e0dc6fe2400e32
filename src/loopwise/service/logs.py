"""Structured logs: JSON lines when stderr is not a terminal, readable colours when it is.

Our own events go through structlog's fast path (a filtering bound logger); third-party
records from the standard library (alembic, granian, asyncpg) are rendered by the same
processors so every line has one shape. Both write into one :class:`LineWriter`, whose
thread does the writing, so a slow reader of stderr never stalls the event loop. Lines
logged inside a sampled span carry its ``trace_id`` and ``span_id``.

The access log (one line per request, :func:`log_request`) is the one event on every
request's path: in JSON it is rendered here directly, to the line structlog's chain would
make (same keys, order, redaction), at a fifth of the chain's cost on the loop (measured
with ``loopwise-bench request-cost``: docs/benchmark/request-cost.md).
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import sys
import time
from collections.abc import Iterable
from json.encoder import encode_basestring_ascii as _string
from typing import Any, Literal, TextIO, cast

import structlog
from opentelemetry import trace

from loopwise.service.logwriter import LineWriter
from loopwise.service.outages import QuietOutages
from loopwise.service.redaction import REDACTED, Redactor

__all__ = ["configure_logging", "get_logger", "log_request"]

_sink: LineWriter | None = None
# Set by configure_logging when access lines are JSON at INFO: then log_request renders
# them itself; otherwise (console, a level above INFO, not configured) it goes through
# structlog like every other event.
_access_line: _AccessLine | None = None

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto",
    level: Literal["debug", "info", "warning", "error"] = "info",
    *,
    secrets: Iterable[str] = (),
) -> None:
    """Set up structlog and the standard library's root logger. Idempotent.

    ``secrets`` are masked wherever they would appear (``redaction.py``), as are URL
    passwords, bearer tokens and fields named like a secret.
    """
    # Logging is process-wide by nature: one writer per process (and per fork).
    global _sink, _access_line
    if _sink is None:
        _sink = LineWriter(sys.stderr)
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    secrets = list(secrets)
    access = as_json and _LEVELS[level] <= logging.INFO
    _access_line = _AccessLine(Redactor(secrets)) if access else None
    # Tracebacks as plain text: the console's default (rich) prints every frame's local
    # variables, database URLs and passwords among them.
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    )
    # Exceptions become text first, so the redactor sees their messages and frames too.
    redact: list[Any] = [structlog.processors.format_exc_info, Redactor(secrets)]
    shared: list[Any] = [
        _logger_key,
        structlog.contextvars.merge_contextvars,
        _trace_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, *redact, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        # A LineWriter is file-like where structlog needs it (write, flush), not a TextIO.
        logger_factory=structlog.WriteLoggerFactory(file=cast(TextIO, _sink)),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(_sink)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *redact,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    # These narrate every step at INFO; an operator needs their warnings only.
    for chatty in ("alembic", "pgserver"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # A database outage is one fact, not a traceback per reconnect attempt (outages.py).
    pool_log = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, QuietOutages) for f in pool_log.filters):
        pool_log.addFilter(QuietOutages())


def _logger_key(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    # structlog reserves get_logger(logger=...), so ours bind `logger_name`; every line
    # says `logger`, like the standard library's records.
    if "logger_name" in event:
        event["logger"] = event.pop("logger_name")
    return event


def _trace_ids(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    # The span in force, if sampled (service/tracing.py): a log line and its trace find
    # each other by these; an unsampled trace is nowhere to be found, so it is not named.
    # Without tracing there is never a span, and this is one context lookup.
    span_context = trace.get_current_span().get_span_context()
    if span_context.trace_flags.sampled:
        event["trace_id"] = f"{span_context.trace_id:032x}"
        event["span_id"] = f"{span_context.span_id:016x}"
    return event


def get_logger(name: str) -> Any:
    """A structlog logger whose events carry ``logger=name``."""
    return structlog.get_logger(logger_name=name)


_access_log = get_logger("loopwise.access")


def log_request(method: str, path: str, status: int, duration_ms: float) -> None:
    """The access log's line for one request, at INFO, with the context's bound fields.

    In JSON, the line is the one structlog's chain renders (``configure_logging``), built
    without the chain (:class:`_AccessLine`): of its steps only the redaction of the
    client's text and the timestamp have work to do here.
    """
    line = _access_line
    if line is None or _sink is None:
        _access_log.info(
            "request", method=method, path=path, status=status, duration_ms=duration_ms
        )
        return
    _sink.write(line.render(method, path, status, duration_ms))


# The fields the access line sets itself: a bound field of the same name changes where
# or whether it appears, which only the general rendering reproduces.
_OWN_KEYS = frozenset(
    {"method", "path", "status", "duration_ms", "event", "logger", "level"}
    | {"timestamp", "trace_id", "span_id"}
)
# RFC 9110's methods: rendered (redacted, escaped) once per configuration.
_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
_BOUND = "structlog_"  # the prefix of structlog's context variables (structlog.contextvars)


class _AccessLine:
    """The access line as structlog's JSON chain renders it, concatenated from its parts.

    ``json.dumps`` of the event dict was the largest step of the line (3.3 of 8.7 µs,
    ``timeit``): here each value is encoded by the encoder ``json.dumps`` uses for it
    (its C string escaper, ``repr`` for numbers), between the fixed text of the keys. The
    method is one of a fixed set, rendered once; the timestamp's text up to the second is
    made once a second; whether a bound key names a secret is decided once per key. The
    line costs 2.9 µs (``timeit``). A field bound under one of our own keys, or a number
    JSON would spell differently (``NaN``), takes the dict and ``json.dumps``.
    """

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._methods = {m: '{"method": ' + _string(redactor.text(m)) for m in _METHODS}
        self._second: tuple[int, str] = (-1, "")  # one assignment: read whole by any thread
        self._secret_fields: dict[str, bool] = {}  # the code's bound keys: a few names

    def render(self, method: str, path: str, status: int, duration_ms: float) -> str:
        """The line, newline included."""
        if type(status) is not int or type(duration_ms) is not float:
            return self._event_line(method, path, status, duration_ms)
        if duration_ms - duration_ms != 0:  # NaN or infinite
            return self._event_line(method, path, status, duration_ms)
        redactor = self._redactor
        head = self._methods.get(method)
        if head is None:
            head = '{"method": ' + _string(redactor.text(method))
        bound = ""
        context = contextvars.copy_context()
        for var in context:
            name = var.name
            if not name.startswith(_BOUND):
                continue
            value = context[var]
            if value is ...:  # structlog's mark of an unbound key
                continue
            key = name[len(_BOUND) :]
            if key in _OWN_KEYS:
                return self._event_line(method, path, status, duration_ms)
            if type(value) is not str:
                text = json.dumps(redactor.scrub(key, value), default=repr)
            elif value and self._secret_field(key):
                text = f'"{REDACTED}"'
            else:
                text = _string(redactor.text(value))
            bound += f", {_string(key)}: {text}"
        return (
            f'{head}, "path": {_string(redactor.text(path))}, "status": {status}, '
            f'"duration_ms": {duration_ms!r}, "event": "request", '
            f'"logger": "loopwise.access"{bound}{_trace_fields()}, "level": "info", '
            f'"timestamp": "{self._timestamp(time.time_ns())}"}}\n'
        )

    def _secret_field(self, key: str) -> bool:
        secret = self._secret_fields.get(key)
        if secret is None:
            secret = self._redactor.secret_field(key)
            if len(self._secret_fields) < 64:
                self._secret_fields[key] = secret
        return secret

    def _timestamp(self, now: int) -> str:
        # TimeStamper's datetime.now(UTC).isoformat() with "Z", from time.time_ns(): both
        # read the system clock and floor it to the microsecond; isoformat leaves out a
        # microsecond of 0.
        second, micro = now // 1_000_000_000, now // 1000 % 1_000_000
        known, text = self._second
        if second != known:
            text = datetime.datetime.fromtimestamp(second, tz=datetime.UTC).isoformat()[:-6]
            self._second = (second, text)
        return f"{text}.{micro:06d}Z" if micro else f"{text}Z"

    def _event_line(self, method: str, path: str, status: int, duration_ms: float) -> str:
        redactor = self._redactor
        event: dict[str, Any] = {
            "method": redactor.text(method),
            "path": redactor.text(path),
            "status": status,
            "duration_ms": duration_ms,
            "event": "request",
            "logger": "loopwise.access",
        }
        for key, value in structlog.contextvars.get_contextvars().items():
            event.setdefault(key, redactor.scrub(key, value))
        _trace_ids(None, "info", event)
        event["level"] = "info"
        now = datetime.datetime.now(tz=datetime.UTC)
        event["timestamp"] = now.isoformat().replace("+00:00", "Z")
        return json.dumps(event, default=repr) + "\n"


def _trace_fields() -> str:
    span_context = trace.get_current_span().get_span_context()
    if not span_context.trace_flags.sampled:
        return ""
    return f', "trace_id": "{span_context.trace_id:032x}", "span_id": "{span_context.span_id:016x}"'
