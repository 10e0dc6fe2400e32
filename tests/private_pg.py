"""A PostgreSQL of the test's own, which the test may stop and start at will.

    async with private_postgres() as pg:     # initdb, start on a free loopback port
        dsn = pg.dsn
        await pg.stop("fast")                # or "immediate": a crash, as if killed
        await pg.start()

Never the machine's shared server: its own data directory, its own port, TCP on
127.0.0.1 only (no Unix socket), stopped and deleted at the end. The binaries are the
``pgserver`` wheel's (a dependency already), so a bare machine has them. As root,
PostgreSQL refuses to run; it then runs as pgserver's own system user, as the embedded
database does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import tempfile
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

from loopwise.service.db import SERVER_USER, ensure_server_user
from tests.process_guard import kill_group, own_group, run_process
from tests.processes import free_port

__all__ = ["PrivatePostgres", "private_postgres"]


def _bin_dir() -> Path:
    with warnings.catch_warnings():
        # As in service/db.py: pgserver's import warns when XDG_RUNTIME_DIR is unset.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


class PrivatePostgres:
    def __init__(self, root: Path, port: int, user: str | None) -> None:
        self.root = root
        self.data = root / "data"
        self.port = port
        self._user = user
        self._bin = _bin_dir()
        self._postmaster: int | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    async def _run(self, tool: str, *args: str) -> None:
        status, out, _ = await run_process(
            str(self._bin / tool),
            *args,
            within=120,
            user=self._user,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        if status != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed:\n{out.decode()}")

    async def init(self) -> None:
        await self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "utf8"
        )

    async def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
            "-c fsync=off -c max_connections=50"
        )
        await self._run(
            "pg_ctl",
            "start",
            "-w",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            options,
        )
        # pg_ctl has left; the postmaster it started leads a session of its own (pg_ctl
        # calls setsid), and the first line of postmaster.pid names it.
        pid_file = await asyncio.to_thread((self.data / "postmaster.pid").read_text)
        self._postmaster = int(pid_file.split("\n", 1)[0])
        own_group(self._postmaster)

    async def stop(self, mode: str = "fast") -> None:
        await self._run("pg_ctl", "stop", "-w", "-D", str(self.data), "-m", mode)
        if self._postmaster is not None:
            kill_group(self._postmaster)
            self._postmaster = None


def _prepare(root: Path) -> str | None:
    """Make ``root`` usable by the server's user; return that user (None: ourselves)."""
    if os.geteuid() != 0:
        return None
    _bin_dir()  # imports pgserver quietly
    from pgserver.utils import ensure_prefix_permissions

    ensure_server_user()
    entry = pwd.getpwnam(SERVER_USER)
    ensure_prefix_permissions(root)
    root.chmod(0o755)
    os.chown(root, entry.pw_uid, entry.pw_gid)
    return SERVER_USER


@contextlib.asynccontextmanager
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    """A fresh PostgreSQL on a free 127.0.0.1 port, stopped and deleted afterwards."""
    root = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="loopwise-private-pg-"))
    try:
        user = await asyncio.to_thread(_prepare, root)
        pg = PrivatePostgres(root, free_port(), user)
        await pg.init()
        await pg.start()
        try:
            yield pg
        finally:
            with contextlib.suppress(RuntimeError):  # already stopped by the test
                await pg.stop("immediate")
    finally:
        await asyncio.to_thread(shutil.rmtree, root, True)
