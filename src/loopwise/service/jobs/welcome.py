"""The welcome email as a job: enqueue it with the new user, send it from a worker.

In ``POST /register``, inside the transaction that inserts the user:

    async with conn.transaction():
        user = await conn.fetchrow("INSERT INTO users ... RETURNING ...")
        await enqueue_welcome_email(
            conn, email=user["email"], name=user["display_name"],
            max_attempts=settings.jobs_max_attempts,
        )
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from loopwise.service.jobs.email import (
    Mailer,
    RecipientRefused,
    mailer_from_settings,
    sender_domain,
    welcome_message,
)
from loopwise.service.jobs.queue import Connection, Job, enqueue
from loopwise.service.jobs.running import PermanentJobError
from loopwise.service.logs import get_logger
from loopwise.service.settings import Settings

__all__ = [
    "WELCOME_EMAIL",
    "enqueue_welcome_email",
    "job_handlers",
    "welcome_handler",
    "welcome_message_id",
]

WELCOME_EMAIL = "email.welcome"

_log = get_logger("loopwise.jobs")

Handler = Callable[[Job], Awaitable[None]]


async def enqueue_welcome_email(
    conn: Connection, *, email: str, name: str, max_attempts: int, user_id: int | None = None
) -> int:
    """Queue the welcome email on ``conn``'s transaction; return the job id.

    With ``user_id`` the email carries the account's verification link, and deleting the
    account cancels the job.
    """
    payload: dict[str, object] = {"email": email, "name": name}
    if user_id is not None:
        payload["user_id"] = user_id
    return await enqueue(conn, WELCOME_EMAIL, payload, max_attempts=max_attempts, user_id=user_id)


def welcome_message_id(job_id: int, domain: str) -> str:
    """The same Message-ID for every attempt of one job: receivers can drop duplicates."""
    return f"<welcome.{job_id}@{domain}>"


def welcome_handler(
    mailer: Mailer,
    *,
    sender: str,
    verify_url: Callable[[int], Awaitable[str | None]] | None = None,
    verify_hours: float = 48,
) -> Handler:
    """The job handler that renders and sends one welcome email.

    Args:
        verify_url: issues the verification link of the job's ``user_id`` (None when the
            account needs none); without it, or for a job queued without a user id (by
            an older version), the email has no link.
    """
    domain = sender_domain(sender)

    async def send_welcome(job: Job) -> None:
        url = None
        user_id = job.payload.get("user_id")
        if verify_url is not None and isinstance(user_id, int):
            url = await verify_url(user_id)
        # A fresh token per attempt: each attempt's message is distinct (see
        # accounts/emails.py); a welcome without a token keeps one id for every attempt.
        message_id = welcome_message_id(job.id, domain)
        if url is not None:
            message_id = f"<welcome.{job.id}.{job.attempt}@{domain}>"
        try:
            message = welcome_message(
                to=job.payload["email"],
                name=job.payload["name"],
                sender=sender,
                message_id=message_id,
                verify_url=url,
                verify_hours=verify_hours,
            )
        except (KeyError, ValueError) as exc:
            raise PermanentJobError(f"cannot render the welcome email: {exc!r}") from exc
        try:
            await mailer.send(message)
        except RecipientRefused as exc:
            raise PermanentJobError(str(exc)) from exc

    return send_welcome


def job_handlers(settings: Settings) -> Mapping[str, Handler]:
    """This package's own job kinds (the welcome email, without links) and handlers.

    The service's workers run ``accounts.emails.account_job_handlers``, which adds the
    account emails and the welcome email's verification link.
    """
    mailer = mailer_from_settings(settings)
    if settings.smtp_host is None and not settings.embedded:
        # Not an error (a staging box may want exactly this), but rarely what production wants.
        _log.warning("emails_to_outbox", outbox=str(settings.data_dir / "outbox"))
    return {WELCOME_EMAIL: welcome_handler(mailer, sender=settings.smtp_from)}
