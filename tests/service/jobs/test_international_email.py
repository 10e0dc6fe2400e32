"""Internationalised addresses over real SMTP servers, with and without SMTPUTF8."""

from __future__ import annotations

import pytest

from loopwise.service.jobs.email import RecipientRefused, SmtpMailer, welcome_message
from tests.service.jobs.conftest import SENDER
from tests.service.jobs.smtp import smtp_server


def _mailer(port: int) -> SmtpMailer:
    return SmtpMailer("127.0.0.1", port, tls="none", connect_timeout=5, send_timeout=10)


def _welcome(to: str) -> object:
    return welcome_message(to=to, name="Zoë", sender=SENDER, message_id="<w.1@loopwise.test>")


async def test_smtputf8_server_receives_a_utf8_mailbox() -> None:
    """With SMTPUTF8 offered, josé@ and 用户@例子.广告 are delivered in UTF-8."""
    async with smtp_server(smtputf8=True) as server:
        for address in ("josé@example.com", "用户@例子.广告"):
            await _mailer(server.port).send(_welcome(address))  # type: ignore[arg-type]
            message = await server.inbox.get()
            # The test server parses bytes as ASCII with surrogate escapes: undo that.
            to = str(message["To"]).encode("utf-8", "surrogateescape").decode()
            assert address.partition("@")[0] + "@" in to
        assert server.recipients[0] == "josé@example.com"
        assert server.recipients[1].startswith("用户@")


async def test_ascii_server_gets_idna_domains_and_refuses_utf8_mailboxes() -> None:
    """Without SMTPUTF8: a Unicode domain goes as A-labels; a UTF-8 local part is permanent."""
    async with smtp_server(smtputf8=False) as server:
        await _mailer(server.port).send(_welcome("ada@bücher.example"))  # type: ignore[arg-type]
        message = await server.inbox.get()
        assert server.recipients == ["ada@xn--bcher-kva.example"]
        assert message["To"].addresses[0].domain == "xn--bcher-kva.example"
        with pytest.raises(RecipientRefused, match="SMTPUTF8"):
            await _mailer(server.port).send(_welcome("josé@example.com"))  # type: ignore[arg-type]
        assert server.inbox.empty()
