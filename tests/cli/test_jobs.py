"""`loopwise jobs`: the operator's view of the queue, and what it may do to dead jobs."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg

from tests.process_guard import run_process


async def _loopwise(database_url: str, cwd: Path, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPWISE_")}
    env |= {"LOOPWISE_DATABASE_URL": database_url, "LOOPWISE_LOG_LEVEL": "warning"}
    status, out, _ = await run_process(
        sys.executable,
        "-m",
        "loopwise",
        *args,
        within=60,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    return status, out.decode()


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
