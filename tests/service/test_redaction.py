"""The redactor: secrets named by the environment stay out of the logs, and its quick check
skips only text that neither pattern could change."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from loopwise.service.redaction import _BEARER, _URL_PASSWORD, REDACTED, Redactor, secrets_of

_PIECES = st.sampled_from(
    ["://", "BeArEr ", "bearer\t", "pg", "user:pw@", "host/", " ", "tok.en-1", "@", ":", "é"]
)


@given(st.lists(st.one_of(_PIECES, st.text(max_size=8)), max_size=12).map("".join))
def test_text_masks_what_both_patterns_mask(text: str) -> None:
    """Text is masked exactly as the two substitutions alone would mask it."""
    slow = _URL_PASSWORD.sub(rf"\g<head>{REDACTED}@", text)
    slow = _BEARER.sub(rf"\g<head>{REDACTED}", slow)
    assert Redactor().text(text) == slow


def test_otlp_exporter_header_values_are_masked() -> None:
    """An API key sent to the trace collector never reaches a log line, raw or decoded."""
    environ = {"OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=k3y%2Fs3cret, x-tenant=acme-prod"}
    redactor = Redactor(secrets_of(object(), environ))
    event = redactor(
        None, "error", {"event": "export refused: k3y/s3cret", "raw": "key k3y%2Fs3cret"}
    )
    assert event == {"event": f"export refused: {REDACTED}", "raw": f"key {REDACTED}"}
