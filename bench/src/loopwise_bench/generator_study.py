"""k6 against wrk on this machine: the throughput each lets a scenario reach, and its CPU.

    python -m loopwise_bench.generator_study --rounds 3 --out bench/generators.json

Runs the bench's own scenarios (bare ASGI hello, FastAPI hello, loopwise's
``GET /users/{id}``) once per generator per round, alternating (k6, wrk, k6, wrk, ...), so
a neighbour's load on a shared machine falls on both alike; then prints, per scenario and
generator, the median and the range over the rounds of: closed-loop requests/s, the
generator's own CPU (cores, of this machine's total) in that loop, and the same at a fixed
constant rate, where the CPU is the generator's cost for the same work.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from loopwise_bench.config import BenchConfig
from loopwise_bench.results import BenchReport
from loopwise_bench.runner import run_bench

__all__ = ["main", "summarise"]

_SCENARIOS = ("asgi_hello", "fastapi_hello", "user_by_id")


def _figures(report: BenchReport) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, result in report.scenarios.items():
        if result.skipped or not result.closed or result.paced is None:
            continue
        closed, paced = result.closed[-1], result.paced
        out[name] = {
            "closed_rps": closed.rps,
            "closed_cores": closed.generator_cores,
            "closed_p99_ms": closed.latency_us.get("p99", 0.0) / 1000,
            "closed_errors": closed.error_count,
            "paced_rps": paced.achieved_rps,
            "paced_cores": paced.generator_cores,
            "paced_p99_ms": paced.latency_us.get("p99", 0.0) / 1000,
            "paced_failed": paced.error_count,
        }
    return out


def summarise(rounds: list[dict[str, Any]]) -> list[str]:
    """Markdown rows: per scenario and generator, each figure's median [min..max]."""
    header = (
        "| scenario | generator | closed req/s | generator cores (closed) | "
        "paced req/s | generator cores (paced) | paced p99 ms | failed/unsent |"
    )
    rows = [header, "|---|---|---:|---:|---:|---:|---:|---:|"]
    generators = sorted({r["generator"] for r in rounds})
    for scenario in _SCENARIOS:
        for generator in generators:
            runs = [
                r["figures"][scenario]
                for r in rounds
                if r["generator"] == generator and scenario in r["figures"]
            ]
            if not runs:
                continue

            def cell(key: str, digits: int, runs: list[dict[str, float]] = runs) -> str:
                values = [run[key] for run in runs]
                med = statistics.median(values)
                return f"{med:,.{digits}f} [{min(values):,.{digits}f}..{max(values):,.{digits}f}]"

            failed = sum(run["closed_errors"] + run["paced_failed"] for run in runs)
            rows.append(
                f"| {scenario} | {generator} | {cell('closed_rps', 0)} | "
                f"{cell('closed_cores', 2)} | {cell('paced_rps', 0)} | "
                f"{cell('paced_cores', 2)} | {cell('paced_p99_ms', 2)} | {failed} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--database-url", default=os.environ.get("LOOPWISE_DATABASE_URL"))
    parser.add_argument("--out", type=Path, default=Path("bench/generators.json"))
    args = parser.parse_args()
    rounds: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="loopwise-generator-study-"))
    for n in range(args.rounds):
        for generator in ("k6", "wrk"):
            config = BenchConfig.quick(
                scenarios=frozenset(_SCENARIOS),
                seconds=args.seconds,
                paced_seconds=args.seconds,
                warmup_seconds=1.0,
                concurrencies=(args.connections,),
                rate=args.rate,
                paced_connections=32,
                overload_on=None,
                load_generator=generator,
                database_url=args.database_url,
                out_dir=work / f"{n}-{generator}",
                data_dir=work / "data",
            )
            report = run_bench(config, lambda message: None)
            rounds.append(
                {
                    "round": n,
                    "generator": generator,
                    "version": report.machine.get("load_generator"),
                    "load_average_at_start": report.machine.get("load_average_at_start"),
                    "at": time.strftime("%H:%M:%S"),
                    "figures": _figures(report),
                }
            )
            print(json.dumps(rounds[-1]), flush=True)  # noqa: T201 -- progress of a long study
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rounds, indent=1) + "\n", encoding="utf-8")
    print("\n".join(summarise(rounds)))  # noqa: T201 -- the study's result


if __name__ == "__main__":
    main()
