"""The log sink: writes never block the caller, nothing is reordered, drops are reported."""

from __future__ import annotations

import io
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from loopwise.service.logwriter import LineWriter


def test_lines_arrive_whole_and_in_order(tmp_path: Path) -> None:
    """Every line written reaches the stream, in the order written."""
    with (tmp_path / "log").open("w") as stream:
        sink = LineWriter(stream)
        for n in range(5_000):
            sink.write(f"line {n}\n")
        sink.close()
    lines = (tmp_path / "log").read_text().splitlines()
    assert lines == [f"line {n}" for n in range(5_000)]


def test_a_stuck_reader_costs_dropped_lines_not_a_blocked_writer() -> None:
    """With nobody reading the pipe, writes return at once; the drops are reported later."""
    read_fd, write_fd = os.pipe()
    stream = open(write_fd, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    sink = LineWriter(stream, max_pending=100)
    line = "x" * 1000 + "\n"
    # Far more than the pipe (64 KiB) and the queue hold: this would block without the sink.
    written = sum(sink.write(line) > 0 for _ in range(1_000))
    assert written < 1_000
    assert sink.dropped > 0
    received = io.BytesIO()

    def drain() -> None:
        while chunk := os.read(read_fd, 65536):
            received.write(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    sink.close()
    stream.close()
    reader.join()
    os.close(read_fd)
    text = received.getvalue().decode()
    assert text.count(line) == written
    assert '"event": "log_lines_dropped"' in text


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_lines_that_follow_the_first_share_its_write() -> None:
    """One wake-up per batch: lines written while the thread gathers go out in one write."""
    stream = _CountingStream()
    sink = LineWriter(stream, gather=1.0)
    for n in range(20):
        sink.write(f"line {n}\n")
        time.sleep(0.001)  # lets the thread run: without gathering, it writes each line
    sink.close()
    assert stream.getvalue().splitlines() == [f"line {n}" for n in range(20)]
    # One write, or two if this thread stalled for the whole gathering second.
    assert stream.writes <= 2


def _write_in_child(sink: LineWriter) -> None:
    sink.write("from the child\n")


@pytest.mark.filterwarnings("ignore:This process .* fork:DeprecationWarning")
def test_a_forked_worker_writes_its_lines_before_it_exits(tmp_path: Path) -> None:
    """A worker forked after the sink was made (even mid-write) writes, and drains at exit."""
    # Repeated: a fork landing while the parent's thread was inside the stream used to
    # leave the child's copy of it locked (about one fork in ten on this machine).
    for attempt in range(20):
        log = tmp_path / f"log{attempt}"
        with log.open("w") as stream:
            sink = LineWriter(stream)
            sink.write("from the parent\n")
            child = multiprocessing.get_context("fork").Process(
                target=_write_in_child, args=(sink,)
            )
            child.start()
            child.join(timeout=30)
            assert child.exitcode == 0
            sink.close()
        assert sorted(log.read_text().splitlines()) == ["from the child", "from the parent"]


def test_max_pending_must_be_positive() -> None:
    """An empty queue could hold no line at all: refused."""
    with pytest.raises(ValueError, match="`max_pending`"):
        LineWriter(io.StringIO(), max_pending=0)


def test_gather_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="`gather`"):
        LineWriter(io.StringIO(), gather=-1)
