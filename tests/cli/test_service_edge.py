"""Start-up refusals and secrets: what `loopwise serve` prints when something is wrong."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from tests.process_guard import run_process
from tests.processes import _env, free_port, run_loopwise, serving

DB_PASSWORD = "S3cretDbPw-x9"
SMTP_PASSWORD = "SmtpPassw0rd-q7"
USER_PASSWORD = "UserPassw0rd-k2"


def _with_password(dsn: str, password: str) -> str:
    """``dsn`` with ``password`` in it; the test servers trust loopback and ignore it."""
    parts = urlsplit(dsn)
    user = (parts.username or "postgres") + f":{password}"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def _closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


@pytest.mark.parametrize("log_format", ["console", "json"])
async def test_unreachable_database_is_one_line_without_the_password(
    tmp_path: Path, log_format: str
) -> None:
    """An unreachable database URL with a password: exit 1, one line, no password, no trace."""
    url = f"postgresql://app:{DB_PASSWORD}@127.0.0.1:{_closed_port()}/app"
    for command in ("serve", "migrate"):
        status, stderr = await run_loopwise(
            command,
            env={
                "LOOPWISE_DATABASE_URL": url,
                "LOOPWISE_LOG_FORMAT": log_format,
                "LOOPWISE_PORT": "0",
                "LOOPWISE_MIGRATE_ON_START": "true",
                "LOOPWISE_DATA_DIR": str(tmp_path),
            },
        )
        assert status == 1, stderr
        assert DB_PASSWORD not in stderr
        assert "Traceback" not in stderr
        assert len(stderr.strip().splitlines()) == 1, stderr
        assert "cannot reach PostgreSQL" in stderr


_CRASH = """
from loopwise.service.logs import configure_logging, get_logger
configure_logging({fmt!r}, "info", secrets=[{password!r}])
log = get_logger("test")

def connect(dsn, password, headers):
    raise ConnectionError(f"could not connect to {{dsn}}")

try:
    connect(
        {dsn!r},
        password={password!r},
        headers={{"Authorization": "Bearer {token}"}},
    )
except ConnectionError:
    log.exception("crashed", dsn={dsn!r}, token={token!r})
import logging
try:
    connect({dsn!r}, {password!r}, None)
except ConnectionError:
    logging.getLogger("granian").exception("worker failed")
from loopwise.service.logs import _sink
_sink.close()
"""


@pytest.mark.parametrize("log_format", ["console", "json"])
async def test_tracebacks_show_no_locals_and_no_secrets(log_format: str) -> None:
    """A logged exception, ours or a library's, carries neither locals nor any secret."""
    token = "tok_" + "Z" * 40
    dsn = f"postgresql://app:{DB_PASSWORD}@db.example:5432/app"
    code = _CRASH.format(fmt=log_format, password=DB_PASSWORD, dsn=dsn, token=token)
    status, out, err = await run_process(
        sys.executable,
        "-c",
        code,
        within=60,
        env=_env({}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    text = (out + err).decode()
    assert status == 0, text
    assert "crashed" in text
    assert "worker failed" in text
    assert "Traceback" in text  # the traceback is there, without what it must not show
    assert DB_PASSWORD not in text
    assert token not in text
    assert "password =" not in text  # no locals table


async def test_running_service_logs_no_secret(database_url: str, tmp_path: Path) -> None:
    """Database and SMTP passwords, user passwords and bearer tokens never reach the log."""
    env = {
        "LOOPWISE_DATABASE_URL": _with_password(database_url, DB_PASSWORD),
        "LOOPWISE_DATA_DIR": str(tmp_path),
        "LOOPWISE_LOG_LEVEL": "debug",
        "LOOPWISE_SMTP_HOST": "127.0.0.1",
        "LOOPWISE_SMTP_PORT": str(_closed_port()),
        "LOOPWISE_SMTP_TLS": "none",
        "LOOPWISE_SMTP_USERNAME": "mailer",
        "LOOPWISE_SMTP_PASSWORD": SMTP_PASSWORD,
        "LOOPWISE_JOBS_BACKOFF_BASE": "0.1",
    }
    body = {"email": "secret@example.com", "password": USER_PASSWORD, "display_name": "S"}
    async with serving(env) as served, httpx.AsyncClient(base_url=served.base_url) as client:
        assert (await client.post("/register", json=body)).status_code == 201
        login = await client.post(
            "/login", json={"email": body["email"], "password": USER_PASSWORD}
        )
        token = login.json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        assert (await client.get("/users/me", headers=auth)).status_code == 200
        wrong = {"email": body["email"], "password": USER_PASSWORD + "x"}
        assert (await client.post("/login", json=wrong)).status_code == 401
        # Malformed and invalid bodies that hold a password: never echoed into a log line.
        await client.post("/login", content=f'{{"password": "{USER_PASSWORD}"'.encode())
        await client.post("/register", json={**body, "email": f"x{USER_PASSWORD}"})
        await client.get("/users/me", headers={"Authorization": f"Bearer {token}x"})
        # The welcome email fails against the closed SMTP port: its failure is logged.
        await served.wait_for_log("job_")
    log = "".join(served.log_lines)
    for secret in (DB_PASSWORD, SMTP_PASSWORD, USER_PASSWORD, token):
        assert secret not in log, secret
    assert any(
        json.loads(line).get("event") == "request"
        for line in served.log_lines
        if line.startswith("{")
    )


async def test_port_in_use_is_one_line_before_postgres_starts(tmp_path: Path) -> None:
    """A port another program listens on: exit 1 and one line, no embedded PostgreSQL."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        status, stderr = await run_loopwise(
            "serve", env={"LOOPWISE_PORT": str(port), "LOOPWISE_DATA_DIR": str(tmp_path)}
        )
    assert status == 1
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in stderr
    assert not await asyncio.to_thread((tmp_path / "pgdata").exists)


async def test_second_serve_refuses_a_port_loopwise_serves(
    database_url: str, tmp_path: Path
) -> None:
    """A second serve on a port a loopwise serves (SO_REUSEPORT) refuses instead of sharing."""
    env = {"LOOPWISE_DATABASE_URL": database_url, "LOOPWISE_DATA_DIR": str(tmp_path)}
    async with serving(env) as first:
        port = urlsplit(first.base_url).port
        status, stderr = await run_loopwise("serve", env={**env, "LOOPWISE_PORT": str(port)})
        assert status == 1
        assert len(stderr.strip().splitlines()) == 1, stderr
        assert "the port is in use" in stderr
        async with httpx.AsyncClient(base_url=first.base_url) as client:
            assert (await client.get("/healthz")).status_code == 200
