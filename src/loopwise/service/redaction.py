"""Keep secrets out of every log line: a structlog processor, run last before rendering.

    configure_logging("json", "info", secrets=secrets_of(settings))

What it removes, from every event (ours and the standard library's, JSON and console),
exception text and tracebacks included, since they are rendered to text before it runs:

- the values of fields whose name says secret (``password``, ``token``, ``authorization``...);
- the password of any URL with credentials (``postgresql://app:pw@db/app`` becomes
  ``postgresql://app:***@db/app``), whatever its scheme;
- ``Bearer <token>`` wherever it appears;
- the literal values it was told are secret: the database password, the SMTP password,
  the values of the OTLP exporter's headers (``OTEL_EXPORTER_OTLP_HEADERS``: API keys).

Tracebacks never show local variables (the console renderer's rich default did, which put
the database URL with its password into one start-up failure 13 times).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["REDACTED", "Redactor", "secrets_of"]

REDACTED = "***"
_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|authorization|cookie|api_?key", re.I)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/\s:@]*:)(?P<pw>[^@\s/]*)@", re.I)
_BEARER = re.compile(r"(?P<head>\bbearer\s+)[A-Za-z0-9._~+/=-]+", re.I)
# What either pattern above needs to match: one search instead of two substitutions for
# the usual text that holds neither (the access log redacts every request's path).
_SUSPECT = re.compile(r"://|bearer", re.I)


class Redactor:
    """A structlog processor that masks secrets in an event's keys and text values."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole. Four characters
        # at least: masking every "a" would make the logs unreadable and protect nothing.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in event.items():
            event[key] = self.scrub(key, value)
        return event

    def scrub(self, key: str, value: Any) -> Any:
        """The value of field ``key`` as it may be logged."""
        if self.secret_field(key) and value not in (None, ""):
            return REDACTED
        return self._scrub(value)

    @staticmethod
    def secret_field(key: str) -> bool:
        """Whether a field named ``key`` holds a secret, whatever its value says."""
        return _SECRET_KEY.search(key) is not None

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                k: REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) else self._scrub(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return type(value)(self._scrub(v) for v in value)
        if isinstance(value, bytes):
            return self.text(value.decode(errors="replace"))
        return value

    def text(self, text: str) -> str:
        """``text`` with every secret it holds masked."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if not _SUSPECT.search(text):
            return text
        text = _URL_PASSWORD.sub(rf"\g<head>{REDACTED}@", text)
        return _BEARER.sub(rf"\g<head>{REDACTED}", text)


def secrets_of(settings: Any, environ: Mapping[str, str] = os.environ) -> list[str]:
    """The literal secrets in ``settings`` and ``environ``.

    The database URL's password, the SMTP password, and the header values the OTLP
    exporter sends (``OTEL_EXPORTER_OTLP_HEADERS`` and its traces-only twin), which
    collectors take as credentials. Both the raw and the percent-decoded form, since
    either may reach a message.
    """
    found: list[str] = []
    url = getattr(settings, "database_url", None)
    if url:
        password = urlsplit(str(url)).password
        if password:
            found += [password, unquote(password)]
    smtp = getattr(settings, "smtp_password", None)
    if smtp is not None:
        found.append(smtp.get_secret_value())
    for variable in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        # The W3C Baggage-like list the SDK parses: "key1=value1,key2=value2".
        for pair in environ.get(variable, "").split(","):
            _, _, value = pair.partition("=")
            if value.strip():
                found += [value.strip(), unquote(value.strip())]
    return found
