"""Secrets named by the environment stay out of the logs."""

from __future__ import annotations

from loopwise.service.redaction import REDACTED, Redactor, secrets_of


def test_otlp_exporter_header_values_are_masked() -> None:
    """An API key sent to the trace collector never reaches a log line, raw or decoded."""
    environ = {"OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=k3y%2Fs3cret, x-tenant=acme-prod"}
    redactor = Redactor(secrets_of(object(), environ))
    event = redactor(
        None, "error", {"event": "export refused: k3y/s3cret", "raw": "key k3y%2Fs3cret"}
    )
    assert event == {"event": f"export refused: {REDACTED}", "raw": f"key {REDACTED}"}
