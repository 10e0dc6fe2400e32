"""``loopwise bench``: measure the service against bare baselines and the seed's naive version.

A subpackage of ``loopwise`` rather than a top-level ``bench`` package: it ships in the
wheel with nothing to configure, so the ``loopwise bench`` command works from any install,
and it claims no generic top-level import name. The service never imports it; its extra
dependencies (matplotlib, psutil) come with ``loopwise[bench]``.

    report = run_bench(BenchConfig.quick(), progress=print)
    write_report(report, Path("bench/results"))
"""

from loopwise.bench.config import BenchConfig
from loopwise.bench.loadgen import LoadGeneratorMissing
from loopwise.bench.report import write_report
from loopwise.bench.results import BenchReport
from loopwise.bench.runner import run_bench

__all__ = ["BenchConfig", "BenchReport", "LoadGeneratorMissing", "run_bench", "write_report"]
