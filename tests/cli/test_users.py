"""``loopwise users``: show an account, disable and enable it, end its sessions, send a reset."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from loopwise.service.settings import Settings
from tests.process_guard import run_process
from tests.service.accounts.conftest import PASSWORD, announced, cache_stats, listening, login
from tests.service.accounts.mail import instance, mailing, next_mail, sql, token_in
from tests.service.jobs.smtp import SmtpServer, smtp_server


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServer]:
    async with smtp_server() as server:
        yield server


async def users(database_url: str, cwd: Path, *args: str) -> tuple[int, str]:
    """Run ``loopwise users ARGS`` as a real process; its exit status and stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPWISE_")}
    env |= {"LOOPWISE_DATABASE_URL": database_url, "LOOPWISE_LOG_LEVEL": "warning"}
    status, out, _ = await run_process(
        sys.executable,
        "-m",
        "loopwise",
        "users",
        *args,
        within=60,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return status, out.decode()


async def _account(client: httpx.AsyncClient, smtp: SmtpServer, email: str) -> dict[str, str]:
    body = {"email": email, "password": PASSWORD, "display_name": "Ada"}
    assert (await client.post("/register", json=body)).status_code == 201
    await next_mail(smtp, email)  # the welcome
    return {"Authorization": f"Bearer {await login(client, email, PASSWORD)}"}


async def _login_status(client: httpx.AsyncClient, email: str) -> int:
    response = await client.post("/login", json={"email": email, "password": PASSWORD})
    return response.status_code


async def test_show_finds_by_email_or_id(
    settings: Settings, smtp: SmtpServer, database_url: str, tmp_path: Path
) -> None:
    """`show` prints verified, disabled, sessions, failed logins and pending jobs."""
    async with instance(mailing(settings, smtp, jobs_in_process=False)) as client:
        body = {"email": "ada@example.com", "password": PASSWORD, "display_name": "Ada"}
        user_id = (await client.post("/register", json=body)).json()["id"]
        await login(client, "ada@example.com", PASSWORD)
        await client.post("/login", json={"email": "ada@example.com", "password": "wrong!!"})
    code, out = await users(database_url, tmp_path, "show", "ADA@example.com")
    assert code == 0, out
    fields = dict(line.split(maxsplit=1) for line in out.splitlines())
    assert fields["id"] == str(user_id)
    assert fields["email_verified_at"] == "-"
    assert fields["disabled_at"] == "-"
    assert fields["live_sessions"] == "1"
    assert fields["failed_logins"] == "1"
    assert fields["pending_jobs"] == "1"  # the welcome email, no worker running
    code, by_id = await users(database_url, tmp_path, "show", str(user_id))
    assert (code, by_id) == (0, out)
    code, _ = await users(database_url, tmp_path, "show", "nobody@example.com")
    assert code == 1


async def test_disable_ends_sessions_everywhere_and_blocks_login(
    settings: Settings, smtp: SmtpServer, database_url: str, tmp_path: Path
) -> None:
    """Disabled: cached session refused, right password refused, old links dead; enable undoes."""
    async with instance(mailing(settings, smtp)) as client:
        auth = await _account(client, smtp, "bea@example.com")
        await listening(client)
        assert (await client.get("/users/me", headers=auth)).status_code == 200
        assert (
            await client.post("/password-reset", json={"email": "bea@example.com"})
        ).status_code == 202
        reset_token = token_in(await next_mail(smtp, "bea@example.com"), "/reset-password")
        before = (await cache_stats(client))["invalidations_total"]
        code, out = await users(database_url, tmp_path, "disable", "bea@example.com")
        assert (code, out.strip()) == (0, f"disabled account {auth_id(out)}; ended 1 session(s)")
        await announced(client, before)
        assert (await client.get("/users/me", headers=auth)).status_code == 401
        assert await _login_status(client, "bea@example.com") == 401
        confirm = {"token": reset_token, "password": "a new password!"}
        assert (await client.post("/password-reset/confirm", json=confirm)).status_code == 403
        # A reset asked for a disabled account answers as ever and sends nothing.
        assert (
            await client.post("/password-reset", json={"email": "bea@example.com"})
        ).status_code == 202
        code, _ = await users(database_url, tmp_path, "enable", "bea@example.com")
        assert code == 0
        assert await _login_status(client, "bea@example.com") == 200
        assert (await client.get("/users/me", headers=auth)).status_code == 401  # stays ended
    resets = await sql(
        database_url, "SELECT state FROM jobs WHERE kind = 'email.password_reset' ORDER BY id"
    )
    assert [r["state"] for r in resets] == ["done", "done"]
    sent = [m for m in smtp.accepted if m["Subject"] == "Reset your loopwise password"]
    assert len(sent) == 1


def auth_id(out: str) -> str:
    return out.split()[2].rstrip(";")


async def test_end_sessions_and_send_reset(
    settings: Settings, smtp: SmtpServer, database_url: str, tmp_path: Path
) -> None:
    """`end-sessions` logs the owner out everywhere; `send-reset` mails a working link."""
    async with instance(mailing(settings, smtp)) as client:
        auth = await _account(client, smtp, "cy@example.com")
        code, out = await users(database_url, tmp_path, "end-sessions", "cy@example.com")
        assert code == 0
        assert out.startswith("ended 1 session(s)")
        assert (await client.get("/users/me", headers=auth)).status_code == 401
        code, out = await users(database_url, tmp_path, "send-reset", "cy@example.com")
        assert code == 0
        assert out.startswith("queued reset email job")
        token = token_in(await next_mail(smtp, "cy@example.com"), "/reset-password")
        confirm = {"token": token, "password": "chosen after a call"}
        assert (await client.post("/password-reset/confirm", json=confirm)).status_code == 204
