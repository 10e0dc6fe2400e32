"""A pytest run killed with SIGKILL leaves no process behind: tests/process_guard.py's promise.

The test runs another pytest that starts a ``loopwise worker`` and a ``loopwise serve`` with
two granian workers (grandchildren of that pytest), kills it with SIGKILL, and waits for
every process below it to be gone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.blocks_loop  # starts processes

ROOT = Path(__file__).resolve().parents[1]

_INNER = """
import asyncio
import os
from pathlib import Path

import pytest

from tests.processes import serving
from tests.service.jobs.processes import WorkerProcesses, worker_env
from tests.servers import closed_port


@pytest.mark.asyncio
async def test_hold_processes(tmp_path: Path) -> None:
    url = os.environ["INNER_DATABASE_URL"]
    workers = WorkerProcesses(tmp_path)
    await workers.start(0, worker_env(url, closed_port()))
    env = {
        "LOOPWISE_DATABASE_URL": url,
        "LOOPWISE_DATA_DIR": str(tmp_path),
        "LOOPWISE_WORKERS": "2",
        "LOOPWISE_JOBS_IN_PROCESS": "false",
    }
    async with serving(env):
        Path(os.environ["INNER_READY"]).write_text("ready")
        await asyncio.Event().wait()  # until killed
"""


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _alive(procs: list[psutil.Process]) -> list[str]:
    """The processes still running (zombies awaiting their reaper count as gone)."""
    running = []
    for proc in procs:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                running.append(f"{proc.pid} {' '.join(proc.cmdline())}")
        except psutil.NoSuchProcess:
            pass
    return running


async def test_killed_pytest_leaves_no_process(database_url: str, tmp_path: Path) -> None:
    """SIGKILL of a pytest holding a worker and a two-worker server: all of them die."""
    await asyncio.to_thread((tmp_path / "test_inner.py").write_text, _INNER)
    ready = tmp_path / "ready"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "INNER_DATABASE_URL": database_url,
        "INNER_READY": str(ready),
    }
    pytest_proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "tests.process_guard",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(tmp_path),
        str(tmp_path / "test_inner.py"),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(120):
            # A bounded poll: the inner run says nothing else.
            while not await asyncio.to_thread(ready.exists):
                assert pytest_proc.returncode is None, "the inner pytest ended early"
                await asyncio.sleep(0.1)
        below = await asyncio.to_thread(_descendants, pytest_proc.pid)
        commands = await asyncio.to_thread(_alive, below)
        # The guard, the worker, the server and granian's two worker processes at least.
        assert sum("loopwise" in command for command in commands) >= 4, commands
    finally:
        pytest_proc.send_signal(signal.SIGKILL)
        await pytest_proc.wait()
    # A bounded poll: the kernel tells an orphan's death to no one but its new parent.
    for _ in range(600):
        survivors = await asyncio.to_thread(_alive, below)
        if not survivors:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"alive 60 s after the kill: {survivors}")
