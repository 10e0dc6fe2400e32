"""Email: the welcome template, SMTP delivery with deadlines, and the outbox folder."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from pathlib import Path

import pytest

from loopwise.patterns.exceptions import DeadlineExceeded
from loopwise.service.jobs.email import (
    OutboxMailer,
    RecipientRefused,
    SmtpMailer,
    mailer_from_settings,
    sender_domain,
    welcome_message,
)
from loopwise.service.settings import InvalidSettings, load_settings
from tests.service.jobs.conftest import SENDER, smtp_mailer
from tests.service.jobs.smtp import SmtpServer, silent_server


def _welcome(name: str = "Ada <Lovelace> & co", to: str = "ada@example.com") -> EmailMessage:
    return welcome_message(to=to, name=name, sender=SENDER, message_id="<welcome.7@loopwise.test>")


def _parts(message: EmailMessage) -> dict[str, str]:
    return {part.get_content_type(): part.get_content() for part in message.iter_parts()}


def test_welcome_has_both_parts_with_the_name_escaped_in_html() -> None:
    """Plain text carries the name as is; HTML escapes it; headers are single-line."""
    message = _welcome(name="Ada <Lovelace>\r\nBcc: evil@example.com & co")
    parts = _parts(message)
    assert set(parts) == {"text/plain", "text/html"}
    assert "Hello Ada <Lovelace> Bcc: evil@example.com & co," in parts["text/plain"]
    assert "Ada &lt;Lovelace&gt; Bcc: evil@example.com &amp; co" in parts["text/html"]
    assert "<Lovelace>" not in parts["text/html"]
    assert message["To"].addresses[0].addr_spec == "ada@example.com"
    assert message["Subject"] == "Welcome to loopwise, Ada <Lovelace> Bcc: evil@example.com & co"
    assert message["Bcc"] is None
    assert message["Message-ID"] == "<welcome.7@loopwise.test>"


def test_welcome_refuses_a_malformed_address() -> None:
    """An address that is not one plain mailbox fails to render (the job goes dead)."""
    with pytest.raises(ValueError, match="addr_spec"):
        _welcome(to="a@b.com, c@d.com")


def test_sender_domain() -> None:
    """Message-IDs are scoped to the sender's domain, with a fallback for bare names."""
    assert sender_domain(SENDER) == "loopwise.test"
    assert sender_domain("nobody") == "loopwise.invalid"


async def test_smtp_delivers_both_parts(smtp: SmtpServer) -> None:
    """A message sent over SMTP arrives whole at the server."""
    await smtp_mailer(smtp.port).send(_welcome())
    received = await smtp.inbox.get()
    assert received["Message-ID"] == "<welcome.7@loopwise.test>"
    assert set(_parts(received)) == {"text/plain", "text/html"}


async def test_smtp_connect_deadline() -> None:
    """A server that accepts and never greets fails the send within the connect deadline."""
    async with silent_server() as port:
        with pytest.raises(DeadlineExceeded, match=r"0\.2s"):
            await smtp_mailer(port, connect_timeout=0.2).send(_welcome())


async def test_smtp_send_deadline(smtp: SmtpServer) -> None:
    """A server that stalls after DATA fails the send within the send deadline."""
    stalled = asyncio.Event()

    async def stall(message: EmailMessage) -> str:
        stalled.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    smtp.on_data = stall
    with pytest.raises(DeadlineExceeded, match=r"0\.3s"):
        await smtp_mailer(smtp.port, send_timeout=0.3).send(_welcome())
    assert stalled.is_set()
    assert smtp.accepted == []


async def test_smtp_refused_recipient_is_permanent(smtp: SmtpServer) -> None:
    """A 5xx refusal of the recipient is reported as permanent; a 4xx is left retryable."""
    smtp.on_rcpt = lambda address: "550 no such user"
    with pytest.raises(RecipientRefused, match="no such user"):
        await smtp_mailer(smtp.port).send(_welcome())
    smtp.on_rcpt = lambda address: "451 try again later"
    with pytest.raises(Exception, match="try again later") as caught:
        await smtp_mailer(smtp.port).send(_welcome())
    assert not isinstance(caught.value, RecipientRefused)


async def test_outbox_writes_one_file_per_message(tmp_path: Path) -> None:
    """The outbox writes an .eml named after the Message-ID; a resend replaces it."""
    outbox = OutboxMailer(tmp_path / "outbox")
    await outbox.send(_welcome())
    await outbox.send(_welcome())
    files = await asyncio.to_thread(lambda: sorted((tmp_path / "outbox").iterdir()))
    assert [f.name for f in files] == ["welcome.7@loopwise.test.eml"]
    content = await asyncio.to_thread(files[0].read_text)
    assert "Message-ID: <welcome.7@loopwise.test>" in content


def test_mailer_follows_settings(tmp_path: Path) -> None:
    """No SMTP host means the outbox under the data dir; a host means SMTP as configured."""
    outbox = mailer_from_settings(load_settings(data_dir=tmp_path, _env_file=None))
    assert isinstance(outbox, OutboxMailer)
    assert outbox.directory == tmp_path / "outbox"
    smtp = mailer_from_settings(
        load_settings(smtp_host="mail.example.com", smtp_port=465, smtp_tls="tls", _env_file=None)
    )
    assert isinstance(smtp, SmtpMailer)
    assert (smtp.host, smtp.port, smtp.tls) == ("mail.example.com", 465, "tls")


def test_smtp_settings_are_checked() -> None:
    """Credentials come in pairs, TLS modes are named, backoff bounds are ordered."""
    with pytest.raises(InvalidSettings, match="smtp_username and smtp_password"):
        load_settings(smtp_username="u", _env_file=None)
    with pytest.raises(InvalidSettings, match="LOOPWISE_SMTP_TLS"):
        load_settings(smtp_tls="ssl", _env_file=None)
    with pytest.raises(InvalidSettings, match="jobs_backoff_base must not exceed"):
        load_settings(jobs_backoff_base=10, jobs_backoff_max=1, _env_file=None)
    with pytest.raises(ValueError, match="`tls` must be"):
        SmtpMailer("h", 1, tls="ssl")
