"""Email addresses: what is accepted, how it is stored, and when two are one mailbox.

    Email                      # a pydantic field type: validated, normalised, within RFC 5321
    mailbox_key(normalise("Ada@Bücher.EXAMPLE")) == "ada@xn--bcher-kva.example"

The rule (never merges distinct mailboxes through Unicode):

- The address is stored exactly as sent, except the domain, which is stored in its
  lower-case Unicode form (email-validator's IDNA 2008 / UTS 46 processing). No Unicode
  normalisation or case mapping touches the local part: Unicode case mappings are not
  one-to-one (KELVIN SIGN U+212A lower-cases to "k", "İ" to "i̇") and NFC itself maps
  U+212A to "K", so either merged accounts whose mail goes to different mailboxes.
- The identity, the unique ``users.email_key`` that login looks up, is the local part
  with its ASCII letters A-Z lower-cased and every other character exactly as sent,
  ``@``, and the domain as IDNA A-labels (``bücher.example``, ``BÜCHER.example`` and
  ``xn--bcher-kva.example`` are one domain, RFC 5890). ASCII case is folded because
  RFC 5321 section 2.4 says exploiting local-part case "impedes interoperability and is
  discouraged" and people type ``Ada@`` and ``ada@`` for one mailbox; that mapping is
  one-to-one on the 26 letters and touches nothing else.
- Lengths are RFC 5321 section 4.5.3.1's, in octets of UTF-8: local part at most 64,
  the whole address at most 254 (a 256-octet path less its angle brackets).

Whether a non-ASCII local part may register depends on the mail relay: it can only be
delivered with SMTPUTF8 (RFC 6531), so it is refused unless ``LOOPWISE_SMTP_UTF8`` says
the configured relay offers it (``users.py``).
"""

from __future__ import annotations

from typing import Annotated

import idna
from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, Field

__all__ = [
    "MAX_ADDRESS_OCTETS",
    "MAX_LOCAL_OCTETS",
    "Email",
    "has_ascii_local_part",
    "mailbox_key",
    "normalise",
]

MAX_LOCAL_OCTETS = 64
MAX_ADDRESS_OCTETS = 254
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def normalise(address: str) -> str:
    """``address`` validated, its local part as sent and its domain in lower-case Unicode.

    Raises:
        ValueError: not an address, or longer than RFC 5321 allows.
    """
    try:
        parsed = validate_email(address, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    # email-validator returns the local part NFC-normalised; keep the one that was sent.
    local = address.rpartition("@")[0]
    if len(local.encode()) > MAX_LOCAL_OCTETS:
        raise ValueError(f"the part before @ must be at most {MAX_LOCAL_OCTETS} octets")
    if len(local.encode()) + 1 + len(parsed.ascii_domain) > MAX_ADDRESS_OCTETS:
        raise ValueError(f"the address must be at most {MAX_ADDRESS_OCTETS} octets")
    return f"{local}@{parsed.domain}"


def mailbox_key(address: str) -> str:
    """The identity of a normalised ``address``: ASCII letters folded, A-label domain."""
    local, _, domain = address.rpartition("@")
    local = local.translate(_ASCII_LOWER)
    # IDNA 2008 with UTS 46 mapping, as email-validator uses: Python's own "idna" codec is
    # IDNA 2003, which maps "ß" to "ss" and so would merge two domains.
    return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"


def has_ascii_local_part(address: str) -> bool:
    """True when ``address`` can travel without SMTPUTF8 (its domain can: as A-labels)."""
    return address.rpartition("@")[0].isascii()


# Bounded before parsing: no more work than a valid address needs.
Email = Annotated[str, Field(min_length=3, max_length=320), AfterValidator(normalise)]
