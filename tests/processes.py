"""Run ``loopwise`` commands as real subprocesses, without blocking the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import httpx

from tests.process_guard import kill_group, run_process, spawn

__all__ = ["Served", "free_port", "run_loopwise", "serving"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _env(extra: Mapping[str, str]) -> dict[str, str]:
    # Start from a clean slate: nothing from the developer's own LOOPWISE_* settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPWISE_")}
    # No drain unless a test asks for one: SIGTERM then stops at once, as it did before.
    env.update({"LOOPWISE_LOG_FORMAT": "json", "LOOPWISE_DRAIN_DELAY": "0", **extra})
    return env


async def run_loopwise(*args: str, env: Mapping[str, str], within: float = 180) -> tuple[int, str]:
    """Run ``python -m loopwise ARGS`` to completion; return (exit status, stderr).

    ``within`` guards against a hang only: four ``migrate`` processes at once took over
    60 s at load average 15 on 2 cores.
    """
    status, _, stderr = await run_process(
        sys.executable,
        "-m",
        "loopwise",
        *args,
        within=within,
        env=_env(env),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    return status, stderr.decode()


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    base_url: str
    log_lines: list[str] = field(default_factory=list)
    _seen: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_for_log(self, needle: str, within: float = 30) -> str:
        """Wait until a stderr line containing ``needle`` appears; return it."""
        try:
            async with asyncio.timeout(within), self._seen:
                while True:
                    for line in self.log_lines:
                        if needle in line:
                            return line
                    await self._seen.wait()
        except TimeoutError:
            tail = "".join(self.log_lines[-20:])
            raise AssertionError(f"no {needle!r} in the server's log; it ends:\n{tail}") from None


@contextlib.asynccontextmanager
async def serving(env: Mapping[str, str], *, ready_within: float = 60) -> AsyncIterator[Served]:
    """``loopwise serve`` on a free loopback port; yields once ``/readyz`` says 200."""
    port = free_port()
    proc = await spawn(
        sys.executable,
        "-m",
        "loopwise",
        "serve",
        env=_env({"LOOPWISE_HOST": "127.0.0.1", "LOOPWISE_PORT": str(port), **env}),
        # One stream: granian writes its own lines to stdout, ours go to stderr.
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    served = Served(proc, f"http://127.0.0.1:{port}")

    async def pump() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            async with served._seen:
                served.log_lines.append(raw.decode(errors="replace"))
                served._seen.notify_all()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(pump())
        try:
            await _wait_ready(served, ready_within)
            yield served
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(30):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            kill_group(proc.pid)


async def _wait_ready(served: Served, within: float) -> None:
    # A bounded poll: the only signal an external process gives that it is ready.
    async with httpx.AsyncClient(base_url=served.base_url) as client, asyncio.timeout(within):
        while True:
            if served.proc.returncode is not None:
                raise AssertionError("server exited early:\n" + "".join(served.log_lines))
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
