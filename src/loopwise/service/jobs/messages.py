"""The account emails as people expect them: plain text plus an HTML alternative.

    message = compose(to="ada@example.com", name="Ada", subject="...", text=..., html=...,
                      sender=settings.smtp_from, message_id="<reset.7.1@example.com>")

Every message carries ``Date`` (RFC 5322 section 3.6.1 makes it mandatory) and a
``Message-ID`` scoped to the sender's domain, and is sent from ``LOOPWISE_SMTP_FROM``.
Links are built from ``LOOPWISE_PUBLIC_URL`` by the caller, never from a request's Host
header, which a client chooses (a forged Host would otherwise send a victim a reset
link to the attacker's site: "password reset poisoning").
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import quote

import idna

__all__ = [
    "account_deleted_message",
    "compose",
    "link",
    "one_line",
    "password_reset_message",
    "verify_email_message",
]


def link(public_url: str, path: str, token: str) -> str:
    """``<public_url><path>?token=<token>``; the token is URL-safe base64 already."""
    return f"{public_url.rstrip('/')}{path}?token={quote(token, safe='')}"


def compose(
    *,
    to: str,
    name: str,
    subject: str,
    text: str,
    html_body: str,
    sender: str,
    message_id: str,
    now: datetime | None = None,
) -> EmailMessage:
    """One message, text first and HTML as its alternative (RFC 2046 section 5.1.4).

    Raises:
        ValueError: ``to`` is not a single plain address.
    """
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = _recipient(one_line(name), _ascii_domain(to))
    message["Date"] = format_datetime(now or datetime.now(UTC))
    message["Message-ID"] = message_id
    # ASCII bodies go as 7bit, lines whole: a link (~90 characters) stays one line that
    # anyone reading the raw message (an outbox file, a log) can copy. RFC 5322 section
    # 2.1.1 allows 998 characters a line; 78 is only advice. Non-ASCII bodies keep the
    # library's choice (quoted-printable or base64), which every client decodes.
    message.set_content(text, cte=_transfer_encoding(text))
    message.add_alternative(html_body, subtype="html", cte=_transfer_encoding(html_body))
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


def _transfer_encoding(body: str) -> str | None:
    if body.isascii() and all(len(line) <= 998 for line in body.splitlines()):
        return "7bit"
    return None


def one_line(name: str) -> str:
    """Header values must stay on one line; a name never needs control characters."""
    return " ".join(name.split())


def _page(*paragraphs: str) -> str:
    body = "\n".join(f"<p>{p}</p>" for p in paragraphs)
    return f"<!doctype html>\n<html><body>\n{body}\n</body></html>\n"


def verify_email_message(
    *, to: str, name: str, url: str, hours: float, sender: str, message_id: str
) -> EmailMessage:
    """The link that proves ``to`` belongs to its account (a resend, or a later reminder)."""
    who = one_line(name)
    text = (
        f"Hello {who},\n\nConfirm that this address is yours by opening this link:\n\n"
        f"{url}\n\nThe link works once, for {hours:g} hours. If you did not create a "
        "loopwise account, ignore this message.\n"
    )
    url_ = html.escape(url)
    page = _page(
        f"Hello {html.escape(who)},",
        f'Confirm that this address is yours: <a href="{url_}">verify my email</a>.',
        f"The link works once, for {hours:g} hours. If you did not create a loopwise "
        "account, ignore this message.",
    )
    return compose(
        to=to,
        name=name,
        subject="Confirm your email address for loopwise",
        text=text,
        html_body=page,
        sender=sender,
        message_id=message_id,
    )


def password_reset_message(
    *, to: str, name: str, url: str, minutes: float, sender: str, message_id: str
) -> EmailMessage:
    """The link that sets a new password; says what to do when it was not asked for."""
    who = one_line(name)
    text = (
        f"Hello {who},\n\nSomeone asked to reset the password of your loopwise account. "
        f"To choose a new password, open this link:\n\n{url}\n\n"
        f"The link works once, for {minutes:g} minutes, and only the newest link works. "
        "Setting a new password signs you out everywhere.\n\n"
        "If you did not ask for this, ignore this message: your password stays as it is.\n"
    )
    url_ = html.escape(url)
    page = _page(
        f"Hello {html.escape(who)},",
        "Someone asked to reset the password of your loopwise account.",
        f'<a href="{url_}">Choose a new password</a>',
        f"The link works once, for {minutes:g} minutes, and only the newest link works. "
        "Setting a new password signs you out everywhere.",
        "If you did not ask for this, ignore this message: your password stays as it is.",
    )
    return compose(
        to=to,
        name=name,
        subject="Reset your loopwise password",
        text=text,
        html_body=page,
        sender=sender,
        message_id=message_id,
    )


def account_deleted_message(*, to: str, name: str, sender: str, message_id: str) -> EmailMessage:
    """The confirmation that an account and its personal data are gone."""
    who = one_line(name)
    text = (
        f"Hello {who},\n\nYour loopwise account has been deleted, and with it your "
        "profile, preferences and sessions. Orders are kept without your name or "
        "address, as accounting law requires.\n\n"
        "If you did not do this, reply to this message at once.\n"
    )
    page = _page(
        f"Hello {html.escape(who)},",
        "Your loopwise account has been deleted, and with it your profile, preferences "
        "and sessions. Orders are kept without your name or address, as accounting law "
        "requires.",
        "If you did not do this, reply to this message at once.",
    )
    return compose(
        to=to,
        name=name,
        subject="Your loopwise account has been deleted",
        text=text,
        html_body=page,
        sender=sender,
        message_id=message_id,
    )
