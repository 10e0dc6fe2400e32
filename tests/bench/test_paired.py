"""Paired rounds: two servers measured alternately in one run, judged on the median ratio."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from blockbuster import BlockBuster

from loopwise_bench.generators import find_load_generator
from loopwise_bench.loadgen import ClosedResult, Request, RequestPlan
from loopwise_bench.paired import PairedResult, run_paired
from loopwise_bench.report import markdown
from loopwise_bench.results import BenchReport
from loopwise_bench.scenarios import SERVERS
from loopwise_bench.servers import ServerProcess
from loopwise_bench.targets import targets


def _closed(requests: int) -> ClosedResult:
    return ClosedResult(connections=64, seconds=10.0, requests=requests, errors={}, latency_us={})


def test_rounds_run_against_both_servers_in_one_run(
    tmp_path: Path, blockbuster: BlockBuster
) -> None:
    """Each round measures both servers with real load; the ratios are A over B per round."""
    blockbuster.deactivate()  # a synchronous harness: no shared event loop to protect
    factory = SERVERS["asgi"].factory
    with (
        ServerProcess("a", factory, workers=1, log_dir=tmp_path) as a,
        ServerProcess("b", factory, workers=1, log_dir=tmp_path) as b,
    ):
        result = run_paired(
            find_load_generator(),
            "a",
            a.url,
            "b",
            b.url,
            RequestPlan([Request("GET", "/hello")]),
            rounds=3,
            connections=4,
            seconds=1.0,
        )
    assert len(result.rounds) == 3
    assert all(x.requests > 0 and x.error_count == 0 for pair in result.rounds for x in pair)
    assert result.ratios == [round(x.rps / y.rps, 4) for x, y in result.rounds]
    assert result.low is not None
    assert result.high is not None
    assert result.low <= (result.median or 0) <= result.high


def test_the_watchdog_target_is_the_median_of_the_paired_rounds() -> None:
    """One bad pair does not decide the target: the median does, and the range is shown."""
    paired = PairedResult("on", "off", 64)
    paired.rounds = [
        (_closed(9_300), _closed(10_000)),  # 0.93: one pair alone would miss the target
        (_closed(9_900), _closed(10_000)),
        (_closed(10_100), _closed(10_000)),
        (_closed(9_950), _closed(10_000)),
        (_closed(10_050), _closed(10_000)),
    ]
    report = BenchReport(
        config={"concurrencies": [64], "seconds": 10.0, "rate": 2000.0},
        machine={},
        started_at=time.time(),
        watchdog=paired,
    )
    (row,) = [t for t in targets(report) if "watchdog" in t.what]
    assert (row.measured, row.met) == (0.995, True)
    text = markdown(report)
    assert "Median on / off: **0.995x** (range 0.93 to 1.01)" in text
    assert "| 2 | off | 990 | 1,000 | 0.99 |" in text


def test_rounds_must_be_positive() -> None:
    """Zero rounds measure nothing, so they are refused by name."""
    with pytest.raises(ValueError, match="`rounds`"):
        run_paired(
            find_load_generator(),
            "a",
            "",
            "b",
            "",
            RequestPlan([]),
            rounds=0,
            connections=1,
            seconds=1.0,
        )
