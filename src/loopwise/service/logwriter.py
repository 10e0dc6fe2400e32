"""A log sink the event loop never waits on: lines are written by a thread, in batches.

    sink = LineWriter(sys.stderr)      # file-like: write(), flush()
    structlog.configure(logger_factory=structlog.WriteLoggerFactory(file=sink), ...)

Writing a line straight to stderr costs a system call per request, and when whatever
reads our stderr (a terminal, journald, a log shipper) falls behind, the pipe fills and
``write`` blocks the event loop: the watchdog once caught a 103 ms stall in exactly that
write. Here ``write`` only appends to a deque; a thread drains it and writes what
accumulated in one call. The first line after a quiet spell wakes the thread, which then
waits ``gather`` seconds for the lines that follow: one wake-up and one ``write`` per
batch, not per line. A wake-up is a GIL handoff between the thread and the loop; at one
per request it cost the loop's throughput most at low concurrency, where lines come
one at a time. If more than ``max_pending`` lines wait (the reader is stuck),
new lines are dropped and counted instead of blocking, and the count is written as soon
as the reader catches up. At exit the thread writes what is left, then ends (it is not a
daemon, and it sees the main thread finish; ``multiprocessing`` children, such as granian's
workers, pass through the same shutdown); a SIGKILL loses only lines milliseconds old.

Processes forked after the sink was made (granian's workers) get a fresh queue and
thread of their own: a thread does not survive ``fork``.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import weakref
from collections import deque
from typing import TextIO

__all__ = ["LineWriter"]

# How often an idle writer checks whether the interpreter is shutting down (seconds).
_IDLE_CHECK = 0.1
# How long a woken writer waits for more lines before writing them (seconds).
_GATHER = 0.01


class LineWriter:
    """File-like and thread-safe: ``write`` never blocks; a thread does the writing."""

    def __init__(
        self, stream: TextIO, *, max_pending: int = 10_000, gather: float = _GATHER
    ) -> None:
        if max_pending < 1:
            raise ValueError("`max_pending` must be positive")
        if gather < 0:
            raise ValueError("`gather` must not be negative")
        self._stream = stream
        self._max = max_pending
        self._gather = gather
        self._closed = False
        self._start()
        # Never fork while the thread is inside the stream: the child would inherit the
        # stream's buffer locked by a thread it does not have, and every write there would
        # fail ("reentrant call"). Hooks cannot be unregistered, hence the weak reference.
        ref = weakref.ref(self)
        os.register_at_fork(
            before=functools.partial(_before_fork, ref),
            after_in_parent=functools.partial(_after_fork_in_parent, ref),
            after_in_child=functools.partial(_after_fork_in_child, ref),
        )

    @property
    def dropped(self) -> int:
        """Lines dropped since the last report because the reader fell behind."""
        return self._dropped

    def _start(self) -> None:
        self._writing = threading.Lock()  # held while the thread is inside the stream
        self._pending: deque[str] = deque()
        self._wake = threading.Event()
        self._dropped = 0
        # Set by the thread just before it sleeps: only then does a write need to wake it
        # (an Event.set per line costs a lock handoff with the thread).
        self._idle = False
        self._thread = threading.Thread(target=self._drain_forever, name="log-writer")
        self._thread.start()

    def write(self, text: str) -> int:
        if self._closed:  # after close(): nobody drains, write through
            self._stream.write(text)
            return len(text)
        if len(self._pending) >= self._max:
            self._dropped += 1
            return 0
        self._pending.append(text)
        if self._idle:
            self._idle = False
            self._wake.set()
        return len(text)

    def flush(self) -> None:
        """Nothing to do: the thread writes as soon as it wakes (see :meth:`close`)."""

    def close(self) -> None:
        """Write what is queued and stop the thread; later lines are written directly."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5)
        self._write_batch()

    def _drain_forever(self) -> None:
        main = threading.main_thread()
        while not self._closed and main.is_alive():
            self._wake.clear()
            self._idle = True
            # A line appended before `_idle` was set did not wake us: look before
            # sleeping. (Each step is atomic under the GIL.)
            if not self._pending:
                self._wake.wait(_IDLE_CHECK)
            self._idle = False
            if self._pending and not self._closed:
                time.sleep(self._gather)  # the lines of the next moment join the batch
            self._write_batch()
        self._write_batch()  # what arrived while the interpreter was shutting down

    def _write_batch(self) -> None:
        batch: list[str] = []
        pending = self._pending
        while pending:
            batch.append(pending.popleft())
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            batch.append(f'{{"event": "log_lines_dropped", "count": {dropped}}}\n')
        if not batch:
            return
        with self._writing:
            try:
                self._stream.write("".join(batch))
                self._stream.flush()
            except (OSError, ValueError):  # stderr closed or gone: nowhere left to say it
                pass


def _before_fork(ref: weakref.ref[LineWriter]) -> None:
    sink = ref()
    if sink is not None:
        sink._writing.acquire()


def _after_fork_in_parent(ref: weakref.ref[LineWriter]) -> None:
    sink = ref()
    if sink is not None:
        sink._writing.release()


def _after_fork_in_child(ref: weakref.ref[LineWriter]) -> None:
    # The parent's thread did not come along: a fresh queue, lock and thread (a closed
    # sink stays closed and writes through).
    sink = ref()
    if sink is None:
        return
    if sink._closed:
        sink._writing = threading.Lock()  # the parent's, acquired before the fork
    else:
        sink._start()
