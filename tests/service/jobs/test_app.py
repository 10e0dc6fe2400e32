"""The jobs wired into the service: the app's lifespan worker, the outbox, the CLI."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import sys
from email.message import EmailMessage
from pathlib import Path

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import Request

import loopwise.service.jobs as jobs
from loopwise.service.app import create_app
from loopwise.service.jobs.welcome import WELCOME_EMAIL, enqueue_welcome_email, job_handlers
from loopwise.service.settings import Settings
from tests.service.jobs.conftest import Observed, worker
from tests.service.jobs.smtp import SmtpServer


async def test_app_runs_the_worker_in_process(settings: Settings, smtp: SmtpServer) -> None:
    """By default `serve` runs workers: a job committed anywhere is sent by the app."""
    configured = settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": smtp.port, "smtp_tls": "none"}
    )
    app = create_app(configured)
    async with LifespanManager(app):
        assert configured.database_url is not None
        conn = await asyncpg.connect(configured.database_url)
        try:
            await enqueue_welcome_email(conn, email="ada@example.com", name="Ada", max_attempts=3)
        finally:
            await conn.close()
        message = await smtp.inbox.get()
    assert message["To"].addresses[0].addr_spec == "ada@example.com"


async def test_app_can_leave_jobs_to_worker_processes(settings: Settings) -> None:
    """With LOOPWISE_JOBS_IN_PROCESS off the app runs no worker, only best-effort work."""
    app = create_app(settings.model_copy(update={"jobs_in_process": False}))
    seen: dict[str, object] = {}

    async def probe(request: Request) -> None:
        seen["worker"] = request.state.job_worker
        seen["background"] = request.state.background

    app.add_api_route("/_probe", probe)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/_probe")).status_code == 200
    assert seen["worker"] is None
    assert isinstance(seen["background"], jobs.BackgroundWork)


async def test_embedded_default_writes_eml_files(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    """With no SMTP server configured the welcome email lands in <data_dir>/outbox/."""
    observed = Observed(job_handlers(settings)[WELCOME_EMAIL])
    async with (
        asyncpg.create_pool(database_url, min_size=1, max_size=3) as pool,
        worker(pool, {WELCOME_EMAIL: observed}, database_url),
    ):
        async with pool.acquire() as conn:
            job_id = await enqueue_welcome_email(
                conn, email="new@example.com", name="New <User>", max_attempts=3
            )
        _, error = await observed.outcomes.get()
    assert error is None
    eml = tmp_path / "outbox" / f"welcome.{job_id}@loopwise.invalid.eml"
    raw = await asyncio.to_thread(eml.read_bytes)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert message["To"].addresses[0].addr_spec == "new@example.com"
    html = message.get_body(("html",))
    assert html is not None
    assert "Hello New &lt;User&gt;," in html.get_content()


async def _loopwise(database_url: str, cwd: Path, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPWISE_")}
    env |= {"LOOPWISE_DATABASE_URL": database_url, "LOOPWISE_LOG_LEVEL": "warning"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loopwise",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_jobs_command_shows_retries_and_discards(database_url: str, tmp_path: Path) -> None:
    """`loopwise jobs` counts by state, lists dead jobs with errors, retries and discards."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """INSERT INTO jobs (kind, max_attempts, attempts, state, finished_at, last_error)
               VALUES ('email.welcome', 3, 3, 'dead', now(), 'SMTP said no'),
                      ('email.welcome', 3, 3, 'dead', now(), 'again')"""
        )
    finally:
        await conn.close()
    code, out = await _loopwise(database_url, tmp_path, "jobs", "counts")
    assert (code, out.split()) == (0, ["queued", "0", "running", "0", "done", "0", "dead", "2"])
    code, out = await _loopwise(database_url, tmp_path, "jobs", "dead")
    assert code == 0
    assert "1\temail.welcome\tattempts=3" in out
    assert "SMTP said no" in out
    code, out = await _loopwise(database_url, tmp_path, "jobs", "retry", "1")
    assert (code, out.strip()) == (0, "requeued 1 dead job(s)")
    code, out = await _loopwise(database_url, tmp_path, "jobs", "discard", "--all")
    assert (code, out.strip()) == (0, "discarded 1 dead job(s)")
    code, out = await _loopwise(database_url, tmp_path, "jobs", "retry")
    assert code == 2
    assert "pass --all" in out


def test_public_names_are_pinned() -> None:
    """The jobs package exports exactly these names."""
    assert sorted(jobs.__all__) == sorted(
        [
            "CHANNEL",
            "WELCOME_EMAIL",
            "BackgroundStats",
            "BackgroundWork",
            "ClosedBackgroundWork",
            "ClosedWorker",
            "DeadJob",
            "Job",
            "JobState",
            "PermanentJobError",
            "Worker",
            "WorkerStats",
            "count_by_state",
            "discard_dead",
            "enqueue",
            "enqueue_welcome_email",
            "job_handlers",
            "list_dead",
            "prune_finished",
            "retry_dead",
        ]
    )
    for name in jobs.__all__:
        assert getattr(jobs, name) is not None


@pytest.mark.parametrize("bad", [{"jobs_concurrency": 0}, {"jobs_lease": -1}])
def test_job_settings_are_checked(bad: dict[str, object]) -> None:
    """Job settings refuse values that break their rule, naming the variable."""
    from loopwise.service.settings import InvalidSettings, load_settings

    with pytest.raises(InvalidSettings, match="LOOPWISE_JOBS_"):
        load_settings(_env_file=None, **bad)
