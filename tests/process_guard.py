"""Process groups the tests start die with the test run, however it ends (kill -9 included).

    proc = await spawn(sys.executable, "-m", "loopwise", "worker", env=env)
    ...
    kill_group(proc.pid)        # on teardown: whatever is left of the group, grandchildren too

``spawn`` starts its command as the leader of a new session (so a Ctrl-C meant for pytest
does not reach it, and its own children share its process group) and hands the group to
this process's guard. The guard is a small process of its own that pytest starts once (its
hooks, imported by ``tests/conftest.py``): it reads ``+pgid`` / ``-pgid`` lines
from a pipe whose only write end pytest holds. When pytest exits, however it exits, the
kernel closes that end; the guard reads end of file and SIGKILLs every group still owned.

Why a guard and not ``PR_SET_PDEATHSIG`` alone: the parent-death signal reaches only the
direct child, while ``loopwise serve`` runs granian's worker processes below it, and a
daemon such as PostgreSQL's postmaster (``pg_ctl start``) is nobody's child at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the guard runs this file as a script: it starts without pytest
    import pytest

__all__ = ["kill_group", "own_group", "run_process", "spawn", "start_guard", "stop_guard"]

_pipe: int | None = None
_guard: subprocess.Popen[bytes] | None = None


def own_group(pgid: int) -> None:
    """Have the guard SIGKILL process group ``pgid`` if this process dies first."""
    _tell(f"+{pgid}\n")


def kill_group(pgid: int) -> None:
    """SIGKILL what is left of process group ``pgid`` (nothing, often) and disown it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    _tell(f"-{pgid}\n")


async def spawn(*argv: str, **kwargs: Any) -> asyncio.subprocess.Process:
    """``asyncio.create_subprocess_exec`` in a process group of its own, owned by the guard."""
    proc = await asyncio.create_subprocess_exec(*argv, start_new_session=True, **kwargs)
    own_group(proc.pid)
    return proc


async def run_process(*argv: str, within: float, **kwargs: Any) -> tuple[int, bytes, bytes]:
    """Run ``argv`` to completion under :func:`spawn`: (status, stdout, stderr).

    Past ``within`` seconds it is killed with its group, and the timeout propagates.
    """
    proc = await spawn(*argv, **kwargs)
    try:
        async with asyncio.timeout(within):
            out, err = await proc.communicate()
    finally:
        kill_group(proc.pid)
        await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out or b"", err or b""


def _tell(line: str) -> None:
    if _pipe is None:
        raise RuntimeError("the process guard is not running: call start_guard() first")
    # A few bytes into a pipe the guard drains at once: the write never waits (the end is
    # non-blocking, so it could not wait on the event loop even if the guard stalled).
    os.write(_pipe, line.encode())


def pytest_configure(config: pytest.Config) -> None:
    """Start this process's guard (each xdist worker is a process with its own)."""
    start_guard()


def pytest_unconfigure(config: pytest.Config) -> None:
    stop_guard()


def start_guard() -> None:
    """Start this process's guard, once: before the first :func:`spawn` (pytest does)."""
    global _pipe, _guard
    if _guard is not None:
        return
    read, write = os.pipe()
    try:
        _guard = subprocess.Popen(  # noqa: S603  # our own interpreter and module
            [sys.executable, __file__],
            stdin=read,
            # Its own session: the terminal's Ctrl-C must not end the guard before pytest.
            start_new_session=True,
        )
    finally:
        os.close(read)
    os.set_blocking(write, False)
    _pipe = write


def stop_guard() -> None:
    """Close the pipe: the guard kills any group still owned, then exits."""
    global _pipe, _guard
    if _guard is None or _pipe is None:
        return
    os.close(_pipe)
    _guard.wait()
    _pipe, _guard = None, None


def _watch() -> None:
    """The guard: track owned groups from stdin; at end of file, SIGKILL them all."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    owned: set[int] = set()
    for line in sys.stdin:
        pgid = int(line[1:])
        if line.startswith("+"):
            owned.add(pgid)
        else:
            owned.discard(pgid)
    for pgid in owned:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


if __name__ == "__main__":
    _watch()
