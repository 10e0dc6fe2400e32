"""Sample the resident memory of each server process (and its workers) through a run.

    with MemorySampler(interval=0.5) as memory:
        memory.watch("loopwise", server.pid)
        ...
    memory.series()  # {"loopwise": [(t, {"pid 123": rss_bytes, ...}), ...]}

A thread, because the harness itself is synchronous: it blocks on the load generator while sampling.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Self

import psutil

__all__ = ["MemorySampler", "Sample"]

Sample = tuple[float, dict[str, int]]


class MemorySampler:
    """RSS of every watched process tree, every ``interval`` seconds, until closed."""

    def __init__(self, interval: float = 0.5) -> None:
        if interval <= 0:
            raise ValueError("`interval` must be positive")
        self._interval = interval
        self._watched: dict[str, int] = {}
        self._series: dict[str, list[Sample]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._started = time.monotonic()

    def watch(self, name: str, pid: int) -> None:
        """Sample ``pid`` and all its descendants under ``name`` from now on."""
        with self._lock:
            self._watched[name] = pid
            self._series.setdefault(name, [])

    def unwatch(self, name: str) -> None:
        with self._lock:
            self._watched.pop(name, None)

    def series(self) -> dict[str, list[Sample]]:
        with self._lock:
            return {name: list(samples) for name, samples in self._series.items()}

    def _sample(self, pid: int) -> dict[str, int]:
        try:
            root = psutil.Process(pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            return {}
        out: dict[str, int] = {}
        for process in processes:
            try:
                label = "main" if process.pid == pid else f"worker {process.pid}"
                out[label] = process.memory_info().rss
            except psutil.Error:
                continue
        return out

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                watched = dict(self._watched)
            now = time.monotonic() - self._started
            for name, pid in watched.items():
                sample = self._sample(pid)
                if sample:
                    with self._lock:
                        self._series[name].append((now, sample))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
