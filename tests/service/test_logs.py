"""The access log's own renderer writes the line structlog's chain would, redaction included."""

from __future__ import annotations

import json

import pytest
import structlog

from loopwise.service import logs
from loopwise.service.logs import configure_logging, get_logger, log_request


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
