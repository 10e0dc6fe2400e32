"""What the people who run the service do to an account (``loopwise users``).

    state = await find_user(conn, "ada@example.com", settings)   # or "42", an id
    await disable_user(conn, state.id)                           # sessions end at once

Each change is one transaction on a connection the command opens. Ending sessions is an
``UPDATE`` of their rows, which the session triggers announce on commit, so every
``serve`` process forgets them within the notification's delivery time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass

from loopwise.service.accounts.emails import enqueue_password_reset
from loopwise.service.accounts.mailboxes import mailbox_key
from loopwise.service.accounts.throttle import LoginThrottle
from loopwise.service.accounts.tokens import revoke_tokens
from loopwise.service.db import Connection
from loopwise.service.identity.sessions import revoke_all_sessions
from loopwise.service.settings import Settings

__all__ = [
    "UserState",
    "disable_user",
    "enable_user",
    "end_sessions",
    "find_user",
    "send_reset",
]


@dataclass(frozen=True, slots=True)
class UserState:
    """One account as an operator sees it."""

    id: int
    email: str
    display_name: str
    role: str
    created_at: dt.datetime
    email_verified_at: dt.datetime | None
    disabled_at: dt.datetime | None
    live_sessions: int
    failed_logins: int  # in the current throttle window
    pending_jobs: int  # queued or running, about this account or its address


_FIND = """
SELECT u.id, u.email, u.display_name, u.role, u.created_at, u.email_verified_at,
       u.disabled_at,
       (SELECT count(*) FROM sessions s
        WHERE s.user_id = u.id AND s.revoked_at IS NULL AND s.expires_at > now())
           AS live_sessions,
       (SELECT count(*) FROM jobs j
        WHERE j.state IN ('queued', 'running')
          AND (j.user_id = u.id OR lower(j.payload ->> 'email') = lower(u.email)))
           AS pending_jobs
FROM users u
WHERE ($1::bigint IS NOT NULL AND u.id = $1) OR ($1::bigint IS NULL AND u.email_key = $2)
"""

_FAILURES = """
SELECT coalesce(max(failures), 0) FROM login_throttle
WHERE key = $1 AND window_start > now() - make_interval(secs => $2)
"""


async def find_user(conn: Connection, query: str, settings: Settings) -> UserState | None:
    """The account whose id (all digits) or mailbox (``mailboxes.py``) is ``query``; else None."""
    user_id = int(query) if query.isdigit() and int(query) < 2**63 else None
    email_key = None
    if user_id is None:
        # Not an address we could have stored (a bad domain): no account has it.
        with contextlib.suppress(ValueError):
            email_key = mailbox_key(query)
    row = await conn.fetchrow(_FIND, user_id, email_key)
    if row is None:
        return None
    key = LoginThrottle.for_attempt(settings, mailbox_key(row["email"]), "").account_key
    failures: int = await conn.fetchval(_FAILURES, key, settings.login_failure_window)
    return UserState(**dict(row), failed_logins=failures)


async def disable_user(conn: Connection, user_id: int) -> int | None:
    """Disable the account and end its sessions and links; returns the sessions ended.

    None when there is no such account. Disabling twice keeps the first time.
    """
    async with conn.transaction():
        found = await conn.fetchval(
            "UPDATE users SET disabled_at = coalesce(disabled_at, now()), updated_at = now() "
            "WHERE id = $1 RETURNING id",
            user_id,
        )
        if found is None:
            return None
        await revoke_tokens(conn, user_id)
        return await revoke_all_sessions(conn, user_id)


async def enable_user(conn: Connection, user_id: int) -> bool:
    """Let the account log in again (its old sessions stay ended); False if no account."""
    status: str = await conn.execute(
        "UPDATE users SET disabled_at = NULL, updated_at = now() WHERE id = $1", user_id
    )
    return status == "UPDATE 1"


async def end_sessions(conn: Connection, user_id: int) -> int:
    """End every session of the account on every instance; returns how many."""
    return await revoke_all_sessions(conn, user_id)


async def send_reset(conn: Connection, state: UserState, settings: Settings) -> int:
    """Queue a password reset email for the account, as if its owner asked; the job id."""
    return await enqueue_password_reset(
        conn, email=state.email, max_attempts=settings.jobs_max_attempts
    )
