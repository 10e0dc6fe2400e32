"""The access log's own renderer writes the line structlog's chain would, redaction included,
and its concatenation of parts writes the line of the event dict it stands for."""

from __future__ import annotations

import contextvars
import datetime
import json
import re

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from loopwise.service import logs
from loopwise.service.logs import _AccessLine, configure_logging, get_logger, log_request
from loopwise.service.redaction import Redactor


class _Lines:
    """A sink that keeps what it is given (the log writer's interface)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        self.lines.append(text)
        return len(text)

    def flush(self) -> None:
        pass


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> _Lines:
    lines = _Lines()
    monkeypatch.setattr(logs, "_sink", lines)
    return lines


def test_access_line_is_the_chains_line(sink: _Lines) -> None:
    """Same keys, order and values as structlog's JSON line; secrets and bearer masked."""
    configure_logging("json", "info", secrets=["hunter22"])
    path = "/users/hunter22/Bearer abcdef"
    with structlog.contextvars.bound_contextvars(request_id="f00d", api_key="k"):
        # A fresh logger: the module's own may be cached on another sink by earlier tests.
        get_logger("loopwise.access").info(
            "request", method="GET", path=path, status=404, duration_ms=0.25
        )
        log_request("GET", path, 404, 0.25)
    chain, ours = (json.loads(line) for line in sink.lines)
    assert chain.pop("timestamp") <= ours.pop("timestamp")
    assert list(ours.items()) == list(chain.items())
    assert ours["path"] == "/users/***/Bearer ***"
    assert ours["api_key"] == "***"


def test_access_line_follows_the_level(sink: _Lines) -> None:
    """Above INFO the access line is not written at all."""
    configure_logging("json", "warning")
    try:
        log_request("GET", "/healthz", 200, 0.1)
    finally:
        configure_logging("json", "info")
    assert sink.lines == []


_KEYS = st.sampled_from(["request_id", "user", "api_key", "password", "level", "path", "span_id"])
_VALUES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["pg://u:hunter22@db/x", "Bearer abc.def", "hunter22", ""]),
    st.none(),
    st.integers(),
    st.floats(),
    st.lists(st.text(max_size=4), max_size=2),
    st.dictionaries(st.sampled_from(["token", "n"]), st.text(max_size=4), max_size=2),
    st.binary(max_size=4),
)
_STAMP = re.compile(r'"timestamp": "[^"]*"')


@given(
    secrets=st.lists(st.text(min_size=1, max_size=6), max_size=2),
    method=st.one_of(st.sampled_from(["GET", "HEAD", "PATCH", "OPTIONS"]), st.text(max_size=8)),
    path=st.one_of(st.sampled_from(["/users/1", "/a://u:p@h", '/é"\\\n']), st.text(max_size=16)),
    status=st.one_of(st.integers(100, 599), st.booleans()),
    duration_ms=st.one_of(st.floats(), st.integers(0, 10)),
    bound=st.dictionaries(_KEYS, _VALUES, max_size=3),
)
def test_access_line_parts_make_the_dicts_line(
    secrets: list[str],
    method: str,
    path: str,
    status: int,
    duration_ms: float,
    bound: dict[str, object],
) -> None:
    """Concatenated from its parts, the line is the JSON of the event dict, byte for byte."""
    line = _AccessLine(Redactor(secrets))

    def both() -> tuple[str, str]:
        structlog.contextvars.bind_contextvars(**bound)
        return (
            line.render(method, path, status, duration_ms),
            line._event_line(method, path, status, duration_ms),
        )

    ours, dicts = contextvars.copy_context().run(both)
    assert _STAMP.sub("", ours) == _STAMP.sub("", dicts)


@given(st.integers(0, 2**62))
def test_access_line_timestamp_is_the_timestampers(now: int) -> None:
    """From nanoseconds, the text of datetime.now(UTC).isoformat() with Z, microseconds floored."""
    line = _AccessLine(Redactor())
    moment = datetime.datetime.fromtimestamp(now // 10**9, tz=datetime.UTC)
    moment = moment.replace(microsecond=now // 1000 % 10**6)
    assert line._timestamp(now) == moment.isoformat().replace("+00:00", "Z")
