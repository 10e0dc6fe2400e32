"""The report's PNG charts: throughput per scenario, latency per scenario, overload, memory.

matplotlib is an optional dependency (the ``bench`` extra); nothing in the service imports
this module. The Agg backend draws to files without a display.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from loopwise_bench.results import BenchReport

__all__ = ["draw_charts"]


def _throughput(report: BenchReport, path: Path) -> Path | None:
    measured = [r for r in report.scenarios.values() if r.closed]
    if not measured:
        return None
    fig, ax = plt.subplots(figsize=(12, 5.5))
    # Up to 20 distinct colours (the default cycle repeats after 10), a log scale so the
    # argon2 endpoints are not flat on the axis, and the legend beside the plot, not on it.
    tab20 = plt.get_cmap("tab20")
    ax.set_prop_cycle(color=[tab20(i) for i in range(20)])
    for r in measured:
        ax.plot(
            [x.connections for x in r.closed], [x.rps for x in r.closed], marker="o", label=r.title
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="connections (closed loop)",
        ylabel="requests/s",
        title="Throughput",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _latency(report: BenchReport, path: Path) -> Path | None:
    measured = [r for r in report.scenarios.values() if r.paced and r.paced.latency_us]
    if not measured:
        return None
    fig, ax = plt.subplots(figsize=(9, 5))
    keys = (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9"))
    width = 0.8 / len(keys)
    for k, (key, label) in enumerate(keys):
        values = [r.paced.latency_us.get(key, 0) / 1000 for r in measured if r.paced]
        ax.bar([i + k * width for i in range(len(measured))], values, width, label=label)
    ax.set_xticks(
        [i + width for i in range(len(measured))], [r.name for r in measured], rotation=20
    )
    ax.set(
        yscale="log",
        ylabel="ms",
        title=f"Latency at a constant {report.config['rate']:,.0f} req/s (from due time)",
    )
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _overload(report: BenchReport, path: Path) -> Path | None:
    o = report.overload
    if o is None or not o.steps:
        return None
    c = [s.load.connections for s in o.steps]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    axes[0].plot(c, [s.load.rps for s in o.steps], marker="o", label="answers")
    axes[0].plot(c, [s.load.ok_rps for s in o.steps], marker="o", label="2xx")
    axes[0].set(title="throughput", ylabel="requests/s")
    axes[0].legend()
    axes[1].plot(c, [100 * s.shed_rate for s in o.steps], marker="o", label="shed (503)")
    axes[1].plot(c, [100 * s.failure_rate for s in o.steps], marker="o", label="failed")
    axes[1].set(title="shed and failed", ylabel="% of requests")
    axes[1].legend()
    axes[2].plot(
        c, [s.load.latency_us.get("p99", 0) / 1000 for s in o.steps], marker="o", color="tab:green"
    )
    axes[2].set(title="p99 latency", ylabel="ms")
    for ax in axes:
        ax.set(xscale="log", xlabel="connections")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Overload: {o.scenario}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _memory(report: BenchReport, path: Path) -> Path | None:
    series = {name: s for name, s in report.memory.items() if s}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(9, 4))
    for name, samples in series.items():
        ax.plot([t for t, _ in samples], [sum(s.values()) / 2**20 for _, s in samples], label=name)
    ax.set(xlabel="seconds into the run", ylabel="RSS, MiB (all processes)", title="Server memory")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def draw_charts(report: BenchReport, out_dir: Path) -> list[Path]:
    """Draw every chart the report has data for; return the files written."""
    drawn = (
        _throughput(report, out_dir / "throughput.png"),
        _latency(report, out_dir / "latency.png"),
        _overload(report, out_dir / "overload.png"),
        _memory(report, out_dir / "memory.png"),
    )
    return [p for p in drawn if p is not None]
