"""Servers under test as child processes on free loopback ports, stopped however the run ends.

    with ServerProcess("naive", "loopwise_bench.apps.naive:create_app", env=env,
                       workers=2, log_dir=out) as server:
        run_closed(generator, server.url + "/users/1", ...)

Leaving the ``with`` block (normally, on error, or on Ctrl-C) sends SIGTERM to the whole
process group, waits for a graceful exit, and kills what is left after the grace period.
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

__all__ = ["ServerExited", "ServerProcess", "free_port"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerExited(RuntimeError):
    """A server under test exited or never became ready; the message names its log."""


class _State(enum.Enum):
    UNOPENED = 1
    RUNNING = 2
    STOPPED = 3


class ServerProcess:
    """One granian server (``loopwise_bench.serve``) serving ``target`` on a free port.

    ``command`` runs something else instead (its ``{port}`` replaced by the port), and
    ``ready_path=None`` waits for the port to accept connections rather than for HTTP.
    """

    def __init__(
        self,
        name: str,
        target: str,
        *,
        workers: int,
        log_dir: Path,
        env: dict[str, str] | None = None,
        ready_path: str | None = "/healthz",
        command: Sequence[str] | None = None,
        ready_timeout: float = 60.0,
        grace: float = 10.0,
    ) -> None:
        self.name = name
        self.target = target
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        self.stop_seconds: float | None = None
        self.exit_code: int | None = None
        self._env = {**os.environ, **(env or {})}
        self._ready_path = ready_path
        self._command = command
        self._ready_timeout = ready_timeout
        self._grace = grace
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._state = _State.UNOPENED

    @property
    def pid(self) -> int:
        if self._process is None:
            raise ServerExited(f"{self.name} is not running")
        return self._process.pid

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def spawn(self) -> None:
        """Start the process without waiting for it: several then start side by side."""
        if self._state is not _State.UNOPENED:
            raise RuntimeError(f"server {self.name} cannot be started twice")
        self._state = _State.RUNNING
        self._log = self.log_path.open("wb")
        argv = [sys.executable, "-m", "loopwise_bench.serve"]
        argv += [self.target, str(self.port), str(self.workers)]
        if self._command is not None:
            argv = [part.replace("{port}", str(self.port)) for part in self._command]
        self._process = subprocess.Popen(  # noqa: S603 -- our own interpreter and modules
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self._env,
            # Its own process group: stop() signals granian and its workers together, and
            # a Ctrl-C in the terminal reaches the harness, which then stops them in order.
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        """Return once it answers; stopped, and ServerExited raised, if it cannot."""
        # A bounded poll of an external process: the only way to know it is listening.
        deadline = time.monotonic() + self._ready_timeout
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self._process is not None and self._process.poll() is not None:
                    raise ServerExited(
                        f"{self.name} exited with status {self._process.returncode} while "
                        f"starting; see {self.log_path}"
                    )
                if self._ready(client):
                    return
                time.sleep(0.1)
        self.stop()
        raise ServerExited(
            f"{self.name} did not answer {self._ready_path} within "
            f"{self._ready_timeout:.0f} s; see {self.log_path}"
        )

    def _ready(self, client: httpx.Client) -> bool:
        try:
            if self._ready_path is None:
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
                return True
            return client.get(self.url + self._ready_path).status_code < 500
        except (httpx.TransportError, OSError):
            return False

    def stop(self) -> None:
        """SIGTERM the process group, wait up to the grace period, then SIGKILL. Idempotent."""
        if self._state is not _State.RUNNING:
            self._state = _State.STOPPED
            return
        self._state = _State.STOPPED
        process = self._process
        if process is not None and process.poll() is None:
            started = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=self._grace)
                self.stop_seconds = time.monotonic() - started
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if process is not None:
            self.exit_code = process.returncode
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
