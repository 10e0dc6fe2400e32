"""The jobs wired into the service: the app's lifespan worker, the outbox, the public names."""

from __future__ import annotations

import asyncio
import email
import email.policy
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
from loopwise.service.state import lifespan_state
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
    """With LOOPWISE_JOBS_IN_PROCESS off the app runs no job worker of its own."""
    app = create_app(settings.model_copy(update={"jobs_in_process": False}))
    seen: dict[str, object] = {}

    async def probe(request: Request) -> None:
        seen["worker"] = lifespan_state(request)["job_worker"]

    app.add_api_route("/_probe", probe)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/_probe")).status_code == 200
    assert seen["worker"] is None


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


def test_public_names_are_pinned() -> None:
    """The jobs package exports exactly these names."""
    assert sorted(jobs.__all__) == sorted(
        [
            "CHANNEL",
            "WELCOME_EMAIL",
            "DeadJob",
            "QueueDepth",
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
