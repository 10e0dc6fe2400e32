"""``loopwise-bench run``: measure the service against bare baselines and a naive version.

A project of its own beside the package (``bench/``, a uv workspace member), so the
``loopwise`` wheel ships the service and the toolkit only. Nothing in ``loopwise`` imports
it; its extra dependencies (matplotlib, psutil, aiosmtpd) are its own.

    report = run_bench(BenchConfig.quick(), progress=print)
    write_report(report, Path("bench/results"))
"""

from loopwise_bench.config import BenchConfig
from loopwise_bench.loadgen import LoadGeneratorMissing
from loopwise_bench.report import write_report
from loopwise_bench.results import BenchReport
from loopwise_bench.runner import run_bench

__all__ = ["BenchConfig", "BenchReport", "LoadGeneratorMissing", "run_bench", "write_report"]
