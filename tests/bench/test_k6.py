"""k6 as the bench's load generator: what its summary means, and dropped requests count."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from blockbuster import BlockBuster

from loopwise_bench import k6
from loopwise_bench.generators import find_load_generator, run_closed, run_paced
from loopwise_bench.loadgen import Request, RequestPlan


class _SlowHandler(BaseHTTPRequestHandler):
    """Answers 200 on ``/slow`` (404 elsewhere) after 0.3 s, or 1.5 s on ``/slower``."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        time.sleep(1.5 if self.path == "/slower" else 0.3)
        self.send_response(200 if self.path in ("/slow", "/slower") else 404)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads k6's counts, not the server's log."""


@pytest.fixture
def slow_server(blockbuster: BlockBuster) -> Iterator[str]:
    """A threaded HTTP server on a free loopback port, stopped at the end of the test."""
    blockbuster.deactivate()  # a plain threaded server and a synchronous harness: no loop
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_requests_due_past_a_second_outstanding_are_dropped_and_fail(slow_server: str) -> None:
    """At 20/s to a 1.5 s server, a second's worth (20) wait; k6 drops the rest: failures."""
    plan = RequestPlan([Request("GET", "/slower")])
    paced = run_paced(find_load_generator(), slow_server, plan, rate=20, connections=1, seconds=2)
    assert paced.generator == "k6"
    assert paced.requests > 0
    assert paced.statuses == {200: paced.requests}
    assert paced.dropped > 0
    assert paced.error_count == paced.dropped  # no bad status, no socket error: only unsent
    # Each answered request took at least the server's 1.5 s, timed from its due time.
    assert paced.latency_us["p50"] >= 1_500_000
    assert paced.cpu_seconds > 0


def test_closed_loop_counts_answers_by_status(slow_server: str) -> None:
    """A closed loop counts every answer by status; a 404 is an error of kind "status"."""
    plan = RequestPlan([Request("GET", "/slow"), Request("GET", "/missing")])
    closed = run_closed(find_load_generator(), slow_server, plan, connections=2, seconds=1)
    assert closed.generator == "k6"
    assert closed.requests == sum(closed.statuses.values())
    assert set(closed.statuses) <= {200, 404}
    assert closed.errors["status"] == closed.statuses.get(404, 0)
    assert closed.errors["network"] == 0
    assert closed.latency_us["p50"] >= 300_000


def test_summary_maps_to_the_shared_result_shape() -> None:
    """k6's summary becomes requests, errors by kind, statuses and latency in microseconds."""
    summary = {
        "state": {"testRunDurationMs": 2000.0},
        "metrics": {
            "http_reqs": {"values": {"count": 10}},
            "http_reqs{status:200}": {"values": {"count": 6}},
            "http_reqs{status:503}": {"values": {"count": 2}},
            "http_reqs{status:0}": {"values": {"count": 1}},
            "http_reqs{status:404}": {"values": {"count": 0}},
            "dropped_iterations": {"values": {"count": 4}},
            "iteration_duration": {
                "values": {
                    "avg": 1.5,
                    "med": 1.0,
                    "p(90)": 2.0,
                    "p(99)": 3.0,
                    "p(99.9)": 4.0,
                    "max": 5.0,
                }
            },
        },
    }
    requests, errors, statuses, latency, seconds = k6.from_summary(
        summary, latency_from="iteration_duration"
    )
    assert (requests, seconds) == (10, 2.0)
    assert statuses == {200: 6, 503: 2}
    assert errors == {"network": 1, "status": 2, "unlisted_status": 1, "dropped": 4}
    assert latency == {
        "p50": 1000.0,
        "p90": 2000.0,
        "p99": 3000.0,
        "p999": 4000.0,
        "max": 5000.0,
        "mean": 1500.0,
    }
