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
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Protocol

import aiosmtplib
import idna

from loopwise.patterns.deadlines import deadline
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
        async with deadline(self._connect_timeout):
            await smtp.connect()
        try:
            async with deadline(self._send_timeout):
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

If you did not create this account, you can ignore this message.
"""

_HTML = """\
<!doctype html>
<html><body>
<p>Hello {name},</p>
<p>Welcome to loopwise: your account is ready. Sign in with <b>{email}</b>.</p>
<p>If you did not create this account, you can ignore this message.</p>
</body></html>
"""


def welcome_message(*, to: str, name: str, sender: str, message_id: str) -> EmailMessage:
    """The welcome email, plain text and HTML, the user's name escaped where it is markup.

    Raises:
        ValueError: ``to`` is not a single plain address.
    """
    # Header values must stay on one line; a name never needs control characters.
    one_line = " ".join(name.split())
    to = _ascii_domain(to)
    message = EmailMessage()
    message["Subject"] = f"Welcome to loopwise, {one_line}"
    message["From"] = sender
    message["To"] = _recipient(one_line, to)
    message["Message-ID"] = message_id
    message.set_content(_TEXT.format(name=one_line, email=to))
    message.add_alternative(
        _HTML.format(name=html.escape(one_line), email=html.escape(to)), subtype="html"
    )
    return message


def _recipient(name: str, address: str) -> Address:
    """The To header's mailbox. The standard library parses an ``addr_spec`` as RFC 5322's
    ASCII grammar and rejects a UTF-8 local part (``NonASCIILocalPartDefect``), which RFC
    6532 allows; such a part is checked for specials and passed as ``username``."""
    local, _, domain = address.rpartition("@")
    if local.isascii():
        return Address(display_name=name, addr_spec=address)
    if any(ch in local for ch in ' ,<>()[]\\;:@"') or any(ch.isspace() for ch in local):
        raise ValueError(f"invalid addr_spec; only one plain mailbox is allowed: {address!r}")
    Address(addr_spec=f"x@{domain}")  # the domain as the standard library checks it
    return Address(display_name=name, username=local, domain=domain)


def _ascii_domain(address: str) -> str:
    """``address`` with its domain as IDNA A-labels: deliverable without SMTPUTF8 whenever
    the local part is ASCII (RFC 5890); a non-ASCII local part still needs SMTPUTF8."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    except idna.IDNAError:
        raise ValueError(f"{domain!r} is not a valid internationalised domain") from None


def sender_domain(sender: str) -> str:
    """The domain of the From address, used to scope Message-IDs."""
    _, addr = parseaddr(sender)
    _, at, domain = addr.rpartition("@")
    return domain if at and domain else "loopwise.invalid"
