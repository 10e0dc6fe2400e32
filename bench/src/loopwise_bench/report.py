"""Write a run's report: ``report.json`` (everything), ``report.md`` (tables), PNG charts.

Every comparison is a ratio of two figures from the *same* run: absolute numbers move
with the machine and its load, ratios much less.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from loopwise_bench.results import BenchReport, ScenarioResult
from loopwise_bench.scenarios import COMPARISONS
from loopwise_bench.targets import targets

__all__ = ["comparisons", "markdown", "write_report"]


def _json_default(value: object) -> object:
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:,.2f}"


def comparisons(report: BenchReport) -> list[dict[str, Any]]:
    """Each comparison whose two scenarios both ran: throughput and latency ratios."""
    out = []
    for c in COMPARISONS:
        a, b = report.scenarios.get(c.scenario), report.scenarios.get(c.baseline)
        if a is None or b is None or a.peak is None or b.peak is None:
            continue
        row: dict[str, Any] = {
            "scenario": c.scenario,
            "baseline": c.baseline,
            "meaning": c.meaning,
            "throughput_ratio": round(a.peak.rps / b.peak.rps, 3) if b.peak.rps else None,
            "target": c.target,
        }
        if a.paced and b.paced and b.paced.latency_us.get("p50"):
            row["p50_ratio"] = round(a.paced.latency_us["p50"] / b.paced.latency_us["p50"], 3)
            row["p99_ratio"] = round(a.paced.latency_us["p99"] / b.paced.latency_us["p99"], 3)
        out.append(row)
    return out


def _scenario_rows(results: dict[str, ScenarioResult], concurrencies: list[int]) -> list[str]:
    head = " | ".join(f"req/s c={c}" for c in concurrencies)
    rows = [
        f"| scenario | server | {head} | errors | p50 ms | p99 ms | p99.9 ms |",
        "|---|---|" + "---:|" * (len(concurrencies) + 4),
    ]
    for r in results.values():
        if r.skipped:
            continue
        by_c = {x.connections: x for x in r.closed}
        rps = " | ".join(f"{by_c[c].rps:,.0f}" if c in by_c else "-" for c in concurrencies)
        errors = sum(x.error_count for x in r.closed) + (r.paced.error_count if r.paced else 0)
        lat = r.paced.latency_us if r.paced else {}
        rate = f" @ {r.paced.rate:,.0f}/s" if r.paced else ""
        rows.append(
            f"| {r.title} | {r.server} | {rps} | {errors} | {_ms(lat.get('p50'))}{rate} | "
            f"{_ms(lat.get('p99'))} | {_ms(lat.get('p999'))} |"
        )
    return rows


def markdown(report: BenchReport) -> str:
    """The report as Markdown tables, with the machine it ran on."""
    m = report.machine
    concurrencies = list(report.config["concurrencies"])
    lines = [
        f"# loopwise bench — {time.strftime('%Y-%m-%d %H:%M', time.localtime(report.started_at))}",
        "",
        *_target_rows(report),
        f"{m.get('cores')} cores ({m.get('cpu')}), {m.get('memory_gib')} GiB, {m.get('os')}, "
        f"Python {m.get('python')}; {m.get('server')}; PostgreSQL {m.get('postgres')}; "
        f"load generator {m.get('load_generator', m.get('wrk'))} on the same machine; "
        f"load average at start {m.get('load_average_at_start')}.",
        "",
        f"Throughput: closed loop, {report.config['seconds']} s per point. Latency: a constant "
        f"rate (at most {report.config['rate']:,.0f} req/s; lower for slow endpoints, shown "
        "beside p50) timed from each request's due time (no coordinated omission).",
        "",
        *_scenario_rows(report.scenarios, concurrencies),
        "",
    ]
    if report.slowest_branch is not None:
        lat = report.slowest_branch.latency_us
        lines += [
            "The one-downstream overview's slowest branch alone (`GET /loyalty/1` on the 50 ms "
            f"simulator, {report.slowest_branch.rate:,.0f}/s, same run): p50 {_ms(lat.get('p50'))} "
            f"ms, p99 {_ms(lat.get('p99'))} ms.",
            "",
        ]
    ratios = comparisons(report)
    if ratios:
        lines += ["## Ratios (same run)", "", "| comparison | throughput | p50 | p99 | target |"]
        lines.append("|---|---:|---:|---:|---:|")
        for r in ratios:
            target = f">= {r['target']}x" if r["target"] else ""
            lines.append(
                f"| {r['scenario']} / {r['baseline']} ({r['meaning']}) | "
                f"{r['throughput_ratio']}x | {r.get('p50_ratio', '-')} | "
                f"{r.get('p99_ratio', '-')} | {target} |"
            )
        lines.append("")
    if report.overload:
        lines += _overload_rows(report)
    if report.watchdog:
        lines += _paired_rows(report)
    if report.storm:
        lines += _storm_rows(report)
    if report.soak:
        lines += _soak_rows(report)
    if report.jobs:
        lines += ["## Welcome-email jobs (`loopwise worker`, SMTP sink at 1 ms)", ""]
        lines += [
            "| worker processes | jobs | seconds | jobs/s | dead |",
            "|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {j.workers} | {j.done} | {j.seconds:.2f} | {j.per_second:,.0f} | {j.dead} |"
            for j in report.jobs
        ]
        lines.append("")
    if report.fanout:
        lines += [
            "## Outbound fan-out",
            "",
            "One process per implementation against one granian worker answering after the"
            " delay. `sockets` is keep-alive HTTP/1.1 on asyncio streams, no client library:"
            " the floor. `httpx` is one shared `httpx.AsyncClient` and a semaphore: the floor"
            " under `loopwise`, which sends through httpx.",
            "",
            "| implementation | URLs | limit | seconds | x ideal | failed |",
        ]
        lines.append("|---|---:|---:|---:|---:|---:|")
        for f in report.fanout:
            lines.append(
                f"| {f.implementation} | {f.urls} | {f.limit} | {f.seconds:.2f} | "
                f"{f.ratio_to_ideal:.2f} | {f.failed} |"
            )
        lines.append("")
    skipped = [r for r in report.scenarios.values() if r.skipped]
    if skipped:
        lines += ["## Not measured in this run", ""]
        lines += [f"- {r.title}: {r.skipped}" for r in skipped]
        lines.append("")
    lines += [
        "## Memory (RSS, MiB: first → peak → last sample)",
        "",
        "| server | all processes | per process (main, then each worker) |",
        "|---|---|---|",
    ]
    for name, samples in report.memory.items():
        if samples:
            totals = [sum(s.values()) / 2**20 for _, s in samples]
            per = " · ".join(
                _trend([s[label] / 2**20 for _, s in samples if label in s])
                for label in samples[-1][1]
            )
            lines.append(f"| {name} | {_trend(totals)} | {per} |")
    lines.append("")
    return "\n".join(lines)


def _soak_rows(report: BenchReport) -> list[str]:
    soak = report.soak
    assert soak is not None
    p = soak.paced
    lines = [
        f"## Soak: the mixed workload at {p.rate:,.0f} req/s for {p.seconds / 60:,.1f} minutes",
        "",
        f"{p.requests:,} requests, {p.error_count} errors, p99 "
        f"{_ms(p.latency_us.get('p99'))} ms. Memory per process (MiB), from a tenth of the way "
        "in (after warm-up) to the end:",
        "",
        "| process | after warm-up | end | peak | growth |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {m.process} | {m.warm_bytes / 2**20:,.0f} | {m.last_bytes / 2**20:,.0f} | "
        f"{m.peak_bytes / 2**20:,.0f} | {m.growth:+.1%} |"
        for m in soak.processes
    ]
    lines.append("")
    return lines


def _trend(values: list[float]) -> str:
    return f"{values[0]:.0f} → {max(values):.0f} → {values[-1]:.0f}" if values else "-"


def _target_rows(report: BenchReport) -> list[str]:
    rows = targets(report)
    if not rows:
        return []
    lines = ["## Targets", "", "| target | measured | goal | |", "|---|---:|---:|---|"]
    for t in rows:
        value = f"{t.measured:,.2f}" if isinstance(t.measured, float) else f"{t.measured}"
        lines.append(
            f"| {t.what} | {value} {t.unit} | {t.target} | {'met' if t.met else 'MISSED'} |"
        )
    return [*lines, ""]


def _paired_rows(report: BenchReport) -> list[str]:
    w = report.watchdog
    assert w is not None
    lines = [
        "## Watchdog on vs off: paired rounds",
        "",
        f"Two identical servers but for `LOOPWISE_WATCHDOG_ENABLED`, both running; each round "
        f"a closed loop of GET /users/{{id}} at c={w.connections} against one then the other, "
        f"the order swapped every round. Median on / off: **{w.median}x** "
        f"(range {w.low} to {w.high}).",
        "",
        "| round | first | on req/s | off req/s | on / off |",
        "|---:|---|---:|---:|---:|",
    ]
    for n, ((on, off), ratio) in enumerate(zip(w.rounds, w.ratios, strict=False), start=1):
        first = w.label_a if n % 2 else w.label_b
        lines.append(f"| {n} | {first} | {on.rps:,.0f} | {off.rps:,.0f} | {ratio} |")
    return [*lines, ""]


def _storm_rows(report: BenchReport) -> list[str]:
    st = report.storm
    assert st is not None
    storm = st.storm
    made = f"{storm.rps:,.1f} registrations/s, {storm.error_count} errors" if storm else "-"
    lines = [
        f"## Registration storm beside GET /users/{{id}} at {st.rate:,.0f} req/s",
        "",
        f"Storm: 8 connections registering as fast as they can ({made}).",
        "",
        "| window | p50 ms | p99 ms | p99.9 ms | lag mean ms | lag p99 <= ms | lag max <= ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, paced, lag in (
        ("without", st.quiet, st.quiet_lag),
        ("with storm", st.stormy, st.stormy_lag),
    ):
        lat = paced.latency_us
        lines.append(
            f"| {label} | {_ms(lat.get('p50'))} | {_ms(lat.get('p99'))} | {_ms(lat.get('p999'))} | "
            f"{lag.get('mean_ms')} | {lag.get('p99_le_ms')} | {lag.get('max_le_ms')} |"
        )
    return [*lines, ""]


def _overload_rows(report: BenchReport) -> list[str]:
    o = report.overload
    assert o is not None
    lines = [
        f"## Overload: {o.scenario}",
        "",
        "Answers counted by status: 503 is load shed on purpose (with Retry-After); "
        "failed is every other error (status, socket, timeout).",
        "",
        "| connections | answers/s | 2xx/s | shed (503) | failed | p99 ms | "
        "/healthz ok/failed | /healthz p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {s.load.connections} | {s.load.rps:,.0f} | {s.load.ok_rps:,.0f} | "
        f"{s.shed_rate:.2%} | {s.failure_rate:.2%} | {_ms(s.load.latency_us.get('p99'))} | "
        f"{s.health_ok}/{s.health_failed} | "
        f"{s.health_p99_ms if s.health_p99_ms is not None else '-'} |"
        for s in o.steps
    ]
    r = o.recovery
    lines += [
        "",
        f"Recovery at {r.rate:,.0f} req/s right after: {r.error_count} errors, "
        f"p99 {_ms(r.latency_us.get('p99'))} ms.",
        "",
    ]
    return lines


def write_report(report: BenchReport, out_dir: Path) -> list[Path]:
    """Write JSON, Markdown and charts into ``out_dir``; return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = dataclasses.asdict(report)
    # Derived figures too, so a reader of the JSON need not recompute them.
    for name, result in report.scenarios.items():
        for point, closed in zip(data["scenarios"][name]["closed"], result.closed, strict=True):
            point["rps"] = round(closed.rps, 1)
            point["error_rate"] = closed.error_rate
        if result.paced is not None:
            data["scenarios"][name]["paced"]["achieved_rps"] = round(result.paced.achieved_rps, 1)
    if report.watchdog is not None:
        w = report.watchdog
        data["watchdog"] |= {"ratios": w.ratios, "median": w.median, "low": w.low, "high": w.high}
    data["comparisons"] = comparisons(report)
    data["targets"] = [dataclasses.asdict(t) for t in targets(report)]
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    md_path = out_dir / "report.md"
    md_path.write_text(markdown(report))
    from loopwise_bench.charts import draw_charts  # matplotlib loads only here

    return [json_path, md_path, *draw_charts(report, out_dir)]
