"""The engines a cluster runs on, as processes a test owns: PostgreSQL, PgBouncer, HAProxy, Redis.

    async with PrivatePostgres(tmp) as pg, PgBouncer(tmp, pg) as bouncer, HAProxy(tmp, apis):
        ...

Each binds a free port on loopback and stops when its block ends. PostgreSQL is a private
instance (its own data directory: the machine's shared server is never touched), so a
test may restart it; so is Redis (nothing persisted). PostgreSQL and PgBouncer refuse to
run as root; as root they run as ``nobody``. PgBouncer and HAProxy run the configuration
files under ``deploy/`` as they are shipped (PgBouncer's rendered from its template,
HAProxy's read with environment variables, which HAProxy expands itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import string
import subprocess
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import asyncpg

from tests.process_guard import kill_group, spawn

__all__ = [
    "DEPLOY",
    "HAProxy",
    "PgBouncer",
    "PrivatePostgres",
    "PrivateRedis",
    "free_port",
    "render_pgbouncer",
    "scratch_directory",
    "system_binary",
]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` right now (bind to 0 and read it back)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def scratch_directory() -> AsyncIterator[Path]:
    """A directory the unprivileged servers can reach (pytest's tmp_path is root's, 0700)."""
    name = await asyncio.to_thread(tempfile.mkdtemp, prefix="loopwise-cluster-")
    path = Path(name)
    try:
        await asyncio.to_thread(path.chmod, 0o755)
        yield path
    finally:
        await asyncio.to_thread(shutil.rmtree, path, ignore_errors=True)


def system_binary(name: str) -> str:
    """A Debian package's binary (``scripts/_system_packages.sh`` installs them)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        raise AssertionError(f"{name} is not installed; ./scripts/test installs it (as root)")
    return found


def _unprivileged(user: str = "nobody") -> tuple[int, int] | None:
    """(uid, gid) to run a server that refuses root as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def _postgres_bin() -> Path:
    # pgserver's wheel ships the binaries (a dependency of the project): no system package.
    import warnings

    with warnings.catch_warnings():
        # platformdirs warns at pgserver's import without XDG_RUNTIME_DIR (CI, containers).
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


class _Process:
    """One child process with its output in a log file; stopped by signal, then killed."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def _spawn(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> None:
        ids = _unprivileged(self._run_as) if self._needs_unprivileged else None
        log = await asyncio.to_thread(open, self.log_path, "ab")
        try:
            self.proc = await spawn(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=dict(env) if env is not None else None,
                user=ids[0] if ids else None,
                group=ids[1] if ids else None,
            )
        finally:
            await asyncio.to_thread(log.close)

    _needs_unprivileged = False
    _run_as = "nobody"  # the account an unprivileged server runs as, when we are root

    async def stop(self, sig: int = signal.SIGTERM, within: float = 30) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            async with asyncio.timeout(within):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        kill_group(proc.pid)

    async def log_tail(self, lines: int = 30) -> str:
        text = await asyncio.to_thread(self.log_path.read_text, errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


async def _wait_for_port(host: str, port: int, process: _Process, within: float = 60) -> None:
    # A bounded poll: a foreign process's listener gives no other signal that it is up.
    async with asyncio.timeout(within):
        while True:
            if process.proc is not None and process.proc.returncode is not None:
                raise AssertionError(f"{process.name} exited:\n{await process.log_tail()}")
            try:
                _, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return


class PrivatePostgres(_Process):
    """A PostgreSQL of the test's own on ``127.0.0.1:<free port>``, trust auth, restartable."""

    _needs_unprivileged = True

    def __init__(self, workdir: Path, *, max_connections: int = 200) -> None:
        super().__init__("postgres", workdir)
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self.data = workdir / "pgdata"
        self.sockets = workdir / "pgsock"
        self.max_connections = max_connections
        self.restarts = 0

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self._init_data)
        await self.start()
        return self

    def _init_data(self) -> None:
        for directory in (self.data, self.sockets):
            directory.mkdir(mode=0o700)
        ids = _unprivileged()
        if ids is not None:
            for directory in (self.data, self.sockets, self.data.parent):
                os.chown(directory, *ids)
        subprocess.run(  # noqa: S603  # our own arguments
            [
                str(_postgres_bin() / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=utf8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            user=ids[0] if ids else None,
            group=ids[1] if ids else None,
            timeout=120,
        )

    async def start(self) -> None:
        await self._spawn(
            [
                str(_postgres_bin() / "postgres"),
                "-D",
                str(self.data),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-k",
                str(self.sockets),
                "-c",
                f"max_connections={self.max_connections}",
                "-c",
                "fsync=off",  # a test database: speed over durability
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        )
        await _wait_for_port(self.host, self.port, self)
        # Accepting connections is not accepting queries (the startup checkpoint).
        async with asyncio.timeout(60):
            while True:
                try:
                    conn = await asyncpg.connect(self.dsn(), timeout=5)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await asyncio.sleep(0.05)
                    continue
                await conn.close()
                return

    async def restart(self) -> None:
        """Fast shutdown (SIGINT: sessions are ended, as in a failover or an upgrade), start."""
        await self.stop(signal.SIGINT)
        await self.start()
        self.restarts += 1


def render_pgbouncer(values: Mapping[str, object]) -> str:
    """``deploy/pgbouncer/pgbouncer.ini.template`` with ``${NAME}`` filled in (as envsubst)."""
    template = (DEPLOY / "pgbouncer" / "pgbouncer.ini.template").read_text()
    return string.Template(template).substitute({k: str(v) for k, v in values.items()})


class PgBouncer(_Process):
    """PgBouncer in transaction pooling mode in front of one PostgreSQL server."""

    _needs_unprivileged = True

    def __init__(
        self,
        workdir: Path,
        *,
        server_host: str,
        server_port: int,
        database: str,
        pool_size: int = 20,
        run_as: str = "nobody",
    ) -> None:
        super().__init__("pgbouncer", workdir)
        # A server reached through a socket directory only its owner may enter (the
        # embedded PostgreSQL's) needs PgBouncer to run as that owner.
        self._run_as = run_as
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self.database = database
        self.config = workdir / "pgbouncer.ini"
        self._values = {
            "PGBOUNCER_LISTEN_ADDR": self.host,
            "PGBOUNCER_LISTEN_PORT": self.port,
            "POSTGRES_HOST": server_host,
            "POSTGRES_PORT": server_port,
            "POSTGRES_DB": database,
            # Trust on loopback in the test; production uses scram-sha-256 (see the template).
            "PGBOUNCER_AUTH_TYPE": "trust",
            "PGBOUNCER_AUTH_FILE": workdir / "pgbouncer-users.txt",
            "PGBOUNCER_POOL_SIZE": pool_size,
            "PGBOUNCER_MAX_CLIENT_CONN": 2000,
        }

    def dsn(self, user: str = "postgres") -> str:
        return f"postgresql://{user}@{self.host}:{self.port}/{self.database}"

    async def __aenter__(self) -> Self:
        text = await asyncio.to_thread(render_pgbouncer, self._values)
        await asyncio.to_thread(self.config.write_text, text)
        users = Path(str(self._values["PGBOUNCER_AUTH_FILE"]))
        await asyncio.to_thread(users.write_text, '"postgres" ""\n')
        ids = _unprivileged()
        if ids is not None:
            for path in (self.config, users, self.config.parent):
                await asyncio.to_thread(os.chown, path, *ids)
        binary = await asyncio.to_thread(system_binary, "pgbouncer")
        await self._spawn([binary, str(self.config)])
        await _wait_for_port(self.host, self.port, self)
        return self


class HAProxy(_Process):
    """HAProxy running ``deploy/haproxy/haproxy.cfg`` in front of the given API addresses."""

    def __init__(self, workdir: Path, apis: Sequence[tuple[str, int]]) -> None:
        super().__init__("haproxy", workdir)
        if len(apis) != 3:
            raise ValueError("`apis` must name the three servers deploy/haproxy/haproxy.cfg lists")
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self.stats_port = free_port(self.host)
        self.apis = list(apis)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def stats_url(self) -> str:
        return f"http://{self.host}:{self.stats_port}/stats;csv"

    async def __aenter__(self) -> Self:
        env = dict(os.environ)
        env.update(
            {
                "HAPROXY_BIND": f"{self.host}:{self.port}",
                "HAPROXY_STATS_BIND": f"{self.host}:{self.stats_port}",
                **{f"LOOPWISE_API{i}": f"{h}:{p}" for i, (h, p) in enumerate(self.apis, 1)},
            }
        )
        config = DEPLOY / "haproxy" / "haproxy.cfg"
        # -db: stay in the foreground; -W would fork a master we do not need.
        binary = await asyncio.to_thread(system_binary, "haproxy")
        await self._spawn([binary, "-db", "-f", str(config)], env=env)
        await _wait_for_port(self.host, self.port, self)
        return self


class PrivateRedis(_Process):
    """A Redis of the test's own on ``127.0.0.1:<free port>``, nothing persisted, restartable.

    ``stop()`` (SIGTERM, or SIGKILL) and ``start()`` again keep the port: clients reconnect.
    """

    def __init__(self, workdir: Path) -> None:
        super().__init__("redis", workdir)
        self.host = "127.0.0.1"
        self.port = free_port(self.host)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    async def start(self) -> None:
        binary = await asyncio.to_thread(system_binary, "redis-server")
        argv = [binary, "--bind", self.host, "--port", str(self.port)]
        await self._spawn([*argv, "--save", "", "--appendonly", "no", "--daemonize", "no"])
        await _wait_for_port(self.host, self.port, self)

    async def __aenter__(self) -> Self:
        await self.start()
        return self
