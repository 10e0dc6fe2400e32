"""Worker processes (``python -m loopwise worker``) that tests start, kill and restart."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.process_guard import kill_group, spawn

__all__ = ["WorkerProcesses", "worker_env"]


def worker_env(database_url: str, smtp_port: int, **settings: object) -> dict[str, str]:
    """The environment of a worker process: fast leases and backoff, SMTP on loopback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPWISE_")}
    values: dict[str, object] = {
        "database_url": database_url,
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp_port,
        "smtp_tls": "none",
        "smtp_from": "loopwise <hello@loopwise.test>",
        "smtp_connect_timeout": 5,
        "smtp_send_timeout": 5,
        "jobs_lease": 2,
        "jobs_timeout": 10,
        "jobs_poll_interval": 0.2,
        "jobs_backoff_base": 0.05,
        "jobs_backoff_max": 0.2,
        "jobs_max_attempts": 100,
        "shutdown_grace": 3,
        "log_level": "warning",
        "log_format": "json",
    } | settings
    env.update({f"LOOPWISE_{k.upper()}": str(v) for k, v in values.items()})
    return env


class WorkerProcesses:
    """Numbered worker processes; each slot can be killed and restarted."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._envs: dict[int, dict[str, str]] = {}
        self.kills = 0

    async def start(self, slot: int, env: dict[str, str]) -> None:
        self._envs[slot] = env
        log = await asyncio.to_thread(open, self._workdir / f"worker-{slot}.log", "ab")
        try:
            # cwd is a scratch directory so no developer's .env leaks into the settings.
            self._procs[slot] = await spawn(
                sys.executable,
                "-m",
                "loopwise",
                "worker",
                cwd=self._workdir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()

    async def kill_and_restart(self, slot: int) -> None:
        """SIGKILL the slot's process (no cleanup of any kind), wait for it, start another."""
        proc = self._procs[slot]
        kill_group(proc.pid)
        await proc.wait()
        self.kills += 1
        await self.start(slot, self._envs[slot])

    async def stop(self) -> list[int | None]:
        """SIGTERM every process and wait for each to exit; return their exit codes."""
        for proc in self._procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(20):
                return [await proc.wait() for proc in self._procs.values()]
        finally:
            for proc in self._procs.values():
                kill_group(proc.pid)
                await proc.wait()
