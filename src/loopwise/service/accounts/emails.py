"""The account emails as jobs: verify an address, reset a password, confirm a deletion.

    await enqueue_password_reset(conn, email="ada@example.com", max_attempts=8)

A token is issued by the worker when it renders the email, not by the request: the raw
token then exists only in the message, never in the ``jobs`` table, and a password reset
request does the same work whether or not the address has an account (the worker finds
out, and drops the job when there is none). Each attempt issues a new token, ending the
previous attempt's, and carries its own ``Message-ID``, so a receiver that drops
duplicates by Message-ID never keeps only a dead link.

Priorities: someone is waiting at a screen for a reset or verification link, so those
overtake the bulk of welcome emails (``queue.claim`` takes the highest priority first).
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

import asyncpg

from loopwise.service.accounts.mailboxes import mailbox_key
from loopwise.service.accounts.tokens import Purpose, issue_token
from loopwise.service.jobs.email import (
    Mailer,
    RecipientRefused,
    mailer_from_settings,
    sender_domain,
)
from loopwise.service.jobs.messages import (
    account_deleted_message,
    link,
    password_reset_message,
    verify_email_message,
)
from loopwise.service.jobs.queue import Connection, Job, enqueue
from loopwise.service.jobs.running import PermanentJobError
from loopwise.service.jobs.welcome import WELCOME_EMAIL, welcome_handler
from loopwise.service.logs import get_logger
from loopwise.service.settings import Settings

__all__ = [
    "ACCOUNT_DELETED",
    "PASSWORD_RESET",
    "PRIORITY_NOTICE",
    "PRIORITY_WAITED_FOR",
    "RESET_JITTER",
    "VERIFY_EMAIL",
    "Links",
    "account_email_handlers",
    "account_job_handlers",
    "enqueue_account_deleted",
    "enqueue_password_reset",
    "enqueue_verify_email",
]

VERIFY_EMAIL = "email.verify"
PASSWORD_RESET = "email.password_reset"  # noqa: S105 - a job kind, not a secret
ACCOUNT_DELETED = "email.account_deleted"

PRIORITY_WAITED_FOR = 10  # a person waits for it: reset and verification links
PRIORITY_NOTICE = 5  # a notice about something done: the deletion confirmation

# Seconds a reset job waits, at random, before it looks the address up. With the worker
# in the serving process, the job's work (more for a known address: a token, a message)
# otherwise lands on the event loop while the request that queued it is still finishing,
# and the 202 for an unknown address came back measurably slower than for a known one
# (median 28 vs 23 ms; docs/operations/accounts.md). Waiting moves that work away from
# the request, to a random later moment no response can be matched with.
RESET_JITTER = (0.05, 0.25)

Handler = Callable[[Job], Awaitable[None]]


class _LinkMessage(Protocol):
    """An email around a link: the verification or the reset message, its TTL bound."""

    def __call__(
        self, *, to: str, name: str, url: str, sender: str, message_id: str
    ) -> EmailMessage: ...


_log = get_logger("loopwise.jobs")


@dataclass(frozen=True, slots=True)
class Links:
    """What a worker needs to put a working link in an email."""

    pool: asyncpg.Pool
    public_url: str
    verify_ttl: float
    reset_ttl: float

    @classmethod
    def from_settings(cls, settings: Settings, pool: asyncpg.Pool) -> Links:
        return cls(
            pool, settings.public_url, settings.email_verify_ttl, settings.password_reset_ttl
        )

    async def verify_url(self, user_id: int, email: str) -> str:
        token = await issue_token(
            self.pool, user_id, Purpose.VERIFY_EMAIL, email, ttl=self.verify_ttl
        )
        return link(self.public_url, "/verify-email", token)

    async def welcome_verify_url(self, user_id: int) -> str | None:
        """The welcome email's link, or None when the account needs none (or is gone)."""
        user = await self.pool.fetchrow(_ENABLED_BY_ID, user_id)
        if user is None or user["verified"]:
            return None
        return await self.verify_url(user["id"], user["email"])

    async def reset_url(self, user_id: int, email: str) -> str:
        token = await issue_token(
            self.pool, user_id, Purpose.RESET_PASSWORD, email, ttl=self.reset_ttl
        )
        return link(self.public_url, "/reset-password", token)


async def enqueue_verify_email(conn: Connection, *, user_id: int, max_attempts: int) -> int:
    return await enqueue(
        conn,
        VERIFY_EMAIL,
        {"user_id": user_id},
        max_attempts=max_attempts,
        priority=PRIORITY_WAITED_FOR,
        user_id=user_id,
    )


async def enqueue_password_reset(conn: Connection, *, email: str, max_attempts: int) -> int:
    """Queue a reset email for whatever account ``email`` names, if any (the worker looks)."""
    return await enqueue(
        conn,
        PASSWORD_RESET,
        {"email": email},
        max_attempts=max_attempts,
        priority=PRIORITY_WAITED_FOR,
    )


async def enqueue_account_deleted(
    conn: Connection, *, email: str, name: str, max_attempts: int
) -> int:
    # No user_id: the account is gone, and this job must outlive it.
    return await enqueue(
        conn,
        ACCOUNT_DELETED,
        {"email": email, "name": name},
        max_attempts=max_attempts,
        priority=PRIORITY_NOTICE,
    )


_ENABLED_BY_ID = """
SELECT id, email, display_name, email_verified_at IS NOT NULL AS verified
FROM users WHERE id = $1 AND disabled_at IS NULL
"""
_ENABLED_BY_EMAIL = """
SELECT id, email, display_name FROM users WHERE email_key = $1 AND disabled_at IS NULL
"""


def account_email_handlers(mailer: Mailer, links: Links, *, sender: str) -> dict[str, Handler]:
    """The handlers of the verification, reset and deletion emails."""
    domain = sender_domain(sender)

    async def deliver(build: Callable[[], EmailMessage]) -> None:
        try:
            message = build()
        except (KeyError, ValueError) as exc:
            raise PermanentJobError(f"cannot render the email: {exc!r}") from exc
        try:
            await mailer.send(message)
        except RecipientRefused as exc:
            raise PermanentJobError(str(exc)) from exc

    async def mail_link(
        job: Job,
        user: asyncpg.Record,
        make_url: Callable[[int, str], Awaitable[str]],
        message: _LinkMessage,
        tag: str,
    ) -> None:
        """Mail ``user`` a fresh link from ``make_url``, in the email ``message`` writes."""
        url = await make_url(user["id"], user["email"])
        await deliver(
            lambda: message(
                to=user["email"],
                name=user["display_name"],
                url=url,
                sender=sender,
                message_id=f"<{tag}.{job.id}.{job.attempt}@{domain}>",
            )
        )

    async def send_verification(job: Job) -> None:
        user = await links.pool.fetchrow(_ENABLED_BY_ID, job.payload["user_id"])
        if user is None or user["verified"]:
            _log.info("verify_email_dropped", job_id=job.id, reason="verified, gone or disabled")
            return
        message = functools.partial(verify_email_message, hours=links.verify_ttl / 3600)
        await mail_link(job, user, links.verify_url, message, "verify")

    async def send_reset(job: Job) -> None:
        await asyncio.sleep(random.uniform(*RESET_JITTER))  # noqa: S311 - not a secret
        user = await links.pool.fetchrow(_ENABLED_BY_EMAIL, mailbox_key(job.payload["email"]))
        if user is None:
            # No account (or a disabled one) behind this address: nothing is sent, and
            # the requester learnt nothing, since the request answered 202 either way.
            _log.info("password_reset_dropped", job_id=job.id, reason="no enabled account")
            return
        message = functools.partial(password_reset_message, minutes=links.reset_ttl / 60)
        await mail_link(job, user, links.reset_url, message, "reset")

    async def send_deleted(job: Job) -> None:
        await deliver(
            lambda: account_deleted_message(
                to=job.payload["email"],
                name=job.payload["name"],
                sender=sender,
                message_id=f"<deleted.{job.id}@{domain}>",
            )
        )

    return {
        VERIFY_EMAIL: send_verification,
        PASSWORD_RESET: send_reset,
        ACCOUNT_DELETED: send_deleted,
    }


def account_job_handlers(settings: Settings, pool: asyncpg.Pool) -> Mapping[str, Handler]:
    """Every job kind this service runs, with its handler: what a worker is given."""
    mailer = mailer_from_settings(settings)
    links = Links.from_settings(settings, pool)
    welcome = welcome_handler(
        mailer,
        sender=settings.smtp_from,
        verify_url=links.welcome_verify_url,
        verify_hours=settings.email_verify_ttl / 3600,
    )
    return {WELCOME_EMAIL: welcome} | account_email_handlers(
        mailer, links, sender=settings.smtp_from
    )
