"""How much CPU a background thread may take from the event loop: idle, or a nice value.

    ThreadPriority.parse("idle")      # SCHED_IDLE: only CPU time nothing else wants
    ThreadPriority.parse("nice:10")   # a smaller share of a busy CPU (weight 110 vs 1024)
    ThreadPriority.parse("nice:0")    # leave the thread as it is
    priority.apply()                  # to the calling thread (Linux; elsewhere a no-op)

Linux schedules threads, not processes: ``sched_setscheduler(0, ...)`` and
``setpriority(PRIO_PROCESS, tid, ...)`` change only the calling thread, and the threads it
starts afterwards inherit the change (argon2 starts one per lane when ``parallelism > 1``).
Other systems would read a thread id as a process id, so there nothing is changed.

``idle`` (``SCHED_IDLE``) weighs 3 against a normal thread's 1024 (nice 10: 110, nice 19:
15), and a normal thread of the same process (or cgroup) that wakes up on its CPU preempts
it at once: the event loop never waits behind it. The price is starvation: while the
process's other threads keep the cores busy, an idle thread barely runs, so its callers
must wait within a deadline (the offload pools' bounded queues do). ``nice:N`` keeps a
share instead, and so delays the loop a little when the CPU is full.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from typing import Literal

__all__ = ["ThreadPriority"]

_RULE = "must be 'idle' or 'nice:N' with N from 0 to 19"
_FALLBACK_NICE = 19  # the lowest normal priority, when SCHED_IDLE is refused

Applied = Literal["idle", "nice", "unchanged", "fallback"]


@dataclass(frozen=True, slots=True)
class ThreadPriority:
    """A thread's CPU priority: ``SCHED_IDLE`` (``idle=True``) or a nice value from 0 to 19."""

    idle: bool = False
    nice: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.nice <= 19:
            raise ValueError(f"`nice` {_RULE.removeprefix('must be ')}, got {self.nice}")

    @classmethod
    def parse(cls, value: object) -> ThreadPriority:
        """``"idle"`` or ``"nice:N"`` (case and spaces ignored); a ThreadPriority passes."""
        if isinstance(value, ThreadPriority):
            return value
        text = str(value).strip().lower().replace(" ", "")
        if text == "idle":
            return cls(idle=True)
        kind, _, number = text.partition(":")
        if kind == "nice" and number.isdigit() and 0 <= int(number) <= 19:
            return cls(nice=int(number))
        raise ValueError(_RULE)

    def __str__(self) -> str:
        return "idle" if self.idle else f"nice:{self.nice}"

    def apply(self) -> Applied:
        """Give the calling thread this priority; it only ever lowers it.

        Returns what the thread now has: ``"fallback"`` when ``SCHED_IDLE`` was refused
        (a seccomp profile, a kernel without it) and nice 19 was used instead.
        """
        if sys.platform != "linux" or (not self.idle and self.nice == 0):
            return "unchanged"
        if self.idle:
            if os.sched_getscheduler(0) == os.SCHED_IDLE:
                return "idle"
            try:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            except OSError:
                _lower_nice(_FALLBACK_NICE)
                return "fallback"
            return "idle"
        _lower_nice(self.nice)
        return "nice"


def _lower_nice(nice: int) -> None:
    # Raising nice needs no privilege; lowering it back would, so only ever raise it.
    tid = threading.get_native_id()
    if os.getpriority(os.PRIO_PROCESS, tid) < nice:
        os.setpriority(os.PRIO_PROCESS, tid, nice)
