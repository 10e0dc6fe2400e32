"""What the service under test talks to: downstream simulators and SMTP sinks, on loopback.

    with Sidecars(log_dir, {"sim50", "smtp_slow"}) as sidecars:
        sidecars.values   # {"sim50": "http://127.0.0.1:…", "smtp_slow": "40123"}

Two simulators (``loopwise_bench.sim``, answering in 50 ms and in 200 ms) and two SMTP sinks
(``loopwise_bench.smtp_sink``, answering in 1 ms and in 2 s). They idle when unused, so
one set serves the whole run, and they stop with it. Only those a run's servers name start.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Self

from loopwise_bench.servers import ServerProcess

__all__ = ["SIM_LATENCIES_MS", "SMTP_DELAYS_MS", "Sidecars", "referenced"]

SIM_LATENCIES_MS = {"sim50": 50, "sim200": 200}
SMTP_DELAYS_MS = {"smtp_fast": 1, "smtp_slow": 2000}


def referenced(envs: Iterable[tuple[tuple[str, str], ...]]) -> set[str]:
    """The sidecars named (``{name}``) in these server environments."""
    names = {*SIM_LATENCIES_MS, *SMTP_DELAYS_MS}
    return {n for env in envs for _, value in env for n in names if "{" + n + "}" in value}


class Sidecars:
    """Start every sidecar on enter, stop them all on exit; ``values`` fills server envs."""

    def __init__(self, log_dir: Path, wanted: set[str]) -> None:
        self._log_dir = log_dir
        self._wanted = wanted
        self._stack = ExitStack()
        self.values: dict[str, str] = {}

    def __enter__(self) -> Self:
        sims: dict[str, ServerProcess] = {}
        sinks: dict[str, ServerProcess] = {}
        for name, latency in SIM_LATENCIES_MS.items():
            if name in self._wanted:
                sims[name] = ServerProcess(
                    name,
                    "loopwise_bench.sim.app:app_from_env",
                    workers=1,
                    log_dir=self._log_dir,
                    env={"LOOPWISE_SIM_CONFIG": json.dumps({"latency_ms": latency})},
                    ready_path="/_sim",
                )
        for name, delay in SMTP_DELAYS_MS.items():
            if name in self._wanted:
                command = [sys.executable, "-m", "loopwise_bench.smtp_sink", "{port}", str(delay)]
                sinks[name] = ServerProcess(
                    name, "", workers=1, log_dir=self._log_dir, ready_path=None, command=command
                )
        try:
            # All spawned first, then waited for: they start side by side, not in turn.
            for sidecar in (*sims.values(), *sinks.values()):
                self._stack.callback(sidecar.stop)
                sidecar.spawn()
            for sidecar in (*sims.values(), *sinks.values()):
                sidecar.wait_ready()
        except BaseException:
            self._stack.close()
            raise
        self.values = {name: sim.url for name, sim in sims.items()}
        self.values |= {name: str(sink.port) for name, sink in sinks.items()}
        return self

    def fill(self, env: tuple[tuple[str, str], ...]) -> dict[str, str]:
        """``env`` with every ``{name}`` replaced by that sidecar's URL or port."""
        out = {}
        for key, value in env:
            for name, filled in self.values.items():
                value = value.replace("{" + name + "}", filled)
            out[key] = value
        return out

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()
