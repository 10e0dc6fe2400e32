"""Sending email: over SMTP (aiosmtplib) or, with no server configured, into an outbox folder.

    mailer = mailer_from_settings(settings)
    await mailer.send(welcome_message(to="ada@example.com", name="Ada", ...))

``SmtpMailer`` opens one connection per message, bounded by a connect deadline and a send
deadline, so a server that accepts and then stalls fails the attempt instead of holding a
worker slot. ``OutboxMailer`` writes ``.eml`` files (off the event loop) named after the
Message-ID, so a repeated delivery of one job overwrites its file instead of adding one.
"""

from __future__ import annotations

import asyncio
import html
import os
import re
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Protocol

import aiosmtplib
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from loopwise.patterns.deadlines import fail_after
from loopwise.service.jobs.messages import compose, one_line
from loopwise.service.settings import Settings

__all__ = [
    "Mailer",
    "OutboxMailer",
    "RecipientRefused",
    "SmtpMailer",
    "mailer_from_settings",
    "sender_domain",
    "welcome_message",
]


_tracer = trace.get_tracer("loopwise.jobs")


class RecipientRefused(Exception):
    """The server refused the recipient for good (a 5xx reply): retrying cannot help."""


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class SmtpMailer:
    """Deliver through an SMTP server, one connection per message.

    SmtpMailer("smtp.example.com", 587, tls="starttls", credentials=("u", "p"))
    SmtpMailer("127.0.0.1", 1025, tls="none", connect_timeout=2, send_timeout=5)
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: str = "starttls",
        credentials: tuple[str, str] | None = None,
        connect_timeout: float = 10.0,
        send_timeout: float = 30.0,
    ) -> None:
        if tls not in ("starttls", "tls", "none"):
            raise ValueError(f"`tls` must be 'starttls', 'tls' or 'none', got {tls!r}")
        self.host, self.port, self.tls = host, port, tls
        self._credentials = credentials
        self._connect_timeout = connect_timeout
        self._send_timeout = send_timeout

    async def send(self, message: EmailMessage) -> None:
        """Send ``message``.

        Raises:
            DeadlineExceeded: connecting or sending took longer than its deadline.
            RecipientRefused: the server refused every recipient with a permanent error.
            aiosmtplib.SMTPException, OSError: anything else; worth retrying.
        """
        username, password = self._credentials or (None, None)
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            use_tls=self.tls == "tls",
            start_tls=self.tls == "starttls",
            username=username,
            password=password,
            # Our deadlines bound each phase; aiosmtplib's own timeout is only a backstop.
            timeout=max(self._connect_timeout, self._send_timeout) + 1.0,
        )
        with _tracer.start_as_current_span(
            "smtp send",
            kind=SpanKind.CLIENT,
            attributes={"server.address": self.host, "server.port": self.port},
        ):
            await self._send(smtp, message)

    async def _send(self, smtp: aiosmtplib.SMTP, message: EmailMessage) -> None:
        async with fail_after(self._connect_timeout):
            await smtp.connect()
        try:
            async with fail_after(self._send_timeout):
                try:
                    await smtp.send_message(message)
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    if all(r.code >= 500 for r in exc.recipients):
                        raise RecipientRefused(str(exc)) from exc
                    raise
                except aiosmtplib.SMTPNotSupported as exc:
                    # A non-ASCII local part needs SMTPUTF8 (RFC 6531), and this server
                    # does not offer it: no retry can change that.
                    raise RecipientRefused(str(exc)) from exc
                await smtp.quit()
        finally:
            # After a failed or abandoned exchange the connection is in an unknown state.
            smtp.close()


_UNSAFE = re.compile(r"[^A-Za-z0-9._@-]")


class OutboxMailer:
    """Write each message as ``<directory>/<message-id>.eml``: email without a server."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, message: EmailMessage) -> None:
        message_id = message.get("Message-ID", "")
        name = _UNSAFE.sub("_", message_id.strip("<>")) or "message"
        await asyncio.to_thread(self._write, f"{name}.eml", message.as_bytes())

    def _write(self, name: str, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees half a message, a rerun replaces it whole.
        target = self.directory / name
        partial = target.with_name(f".{name}.{os.getpid()}.partial")
        partial.write_bytes(data)
        partial.replace(target)


def mailer_from_settings(settings: Settings) -> SmtpMailer | OutboxMailer:
    """SMTP when ``LOOPWISE_SMTP_HOST`` is set, otherwise ``<data_dir>/outbox/``."""
    if settings.smtp_host is None:
        return OutboxMailer(settings.data_dir / "outbox")
    credentials = None
    if settings.smtp_username is not None and settings.smtp_password is not None:
        credentials = (settings.smtp_username, settings.smtp_password.get_secret_value())
    return SmtpMailer(
        settings.smtp_host,
        settings.smtp_port,
        tls=settings.smtp_tls,
        credentials=credentials,
        connect_timeout=settings.smtp_connect_timeout,
        send_timeout=settings.smtp_send_timeout,
    )


_TEXT = """\
Hello {name},

Welcome to loopwise: your account is ready. Sign in with {email}.
{verify}
If you did not create this account, you can ignore this message.
"""

_VERIFY_TEXT = """
Confirm that this address is yours by opening this link (it works once, for {hours:g} hours):

{url}
"""

_HTML = """\
<!doctype html>
<html><body>
<p>Hello {name},</p>
<p>Welcome to loopwise: your account is ready. Sign in with <b>{email}</b>.</p>
{verify}<p>If you did not create this account, you can ignore this message.</p>
</body></html>
"""

_VERIFY_HTML = """\
<p>Confirm that this address is yours: <a href="{url}">verify my email</a>
(the link works once, for {hours:g} hours).</p>
"""


def welcome_message(
    *,
    to: str,
    name: str,
    sender: str,
    message_id: str,
    verify_url: str | None = None,
    verify_hours: float = 48,
) -> EmailMessage:
    """The welcome email, plain text and HTML, the user's name escaped where it is markup.

    With ``verify_url`` it also carries the link that verifies the address.

    Raises:
        ValueError: ``to`` is not a single plain address.
    """
    who = one_line(name)
    verify_text = verify_html = ""
    if verify_url is not None:
        verify_text = _VERIFY_TEXT.format(url=verify_url, hours=verify_hours)
        verify_html = _VERIFY_HTML.format(url=html.escape(verify_url), hours=verify_hours)
    return compose(
        to=to,
        name=name,
        subject=f"Welcome to loopwise, {who}",
        text=_TEXT.format(name=who, email=to, verify=verify_text),
        html_body=_HTML.format(name=html.escape(who), email=html.escape(to), verify=verify_html),
        sender=sender,
        message_id=message_id,
    )


def sender_domain(sender: str) -> str:
    """The domain of the From address, used to scope Message-IDs."""
    _, addr = parseaddr(sender)
    _, at, domain = addr.rpartition("@")
    return domain if at and domain else "loopwise.invalid"
