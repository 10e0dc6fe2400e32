"""Functions CpuPool tests run in worker processes (importable, stdlib only: spawn is quick)."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any


def busy_interval(rounds: int) -> tuple[int, float, float]:
    """Spin the CPU; return this process's id and when the work started and ended."""
    started = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
    total = 0
    for i in range(rounds):
        total += i * i
    return os.getpid(), started, time.monotonic()


def divide(a: int, b: int) -> float:
    return a / b


def wait_for(release: Any, started: Any) -> str:
    """Signal that the call runs, then hold the worker process until released."""
    started.set()
    release.wait(60)
    return "released"


def die() -> None:
    """End this worker process as the OOM killer would: SIGKILL, no clean-up."""
    os.kill(os.getpid(), signal.SIGKILL)


def pid() -> int:
    return os.getpid()


def scheduling() -> tuple[int, int, int]:
    """This process's id, and its thread's scheduling policy and nice value."""
    tid = threading.get_native_id()
    return os.getpid(), os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, tid)
