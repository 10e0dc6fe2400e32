"""The documentation site tells the truth about settings: each one documented, none invented."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from loopwise.service.settings import Settings

_DOCS = Path(__file__).resolve().parent.parent / "docs"
# Read by the test suite, not by the service: documented beside the settings all the same.
_TEST_ONLY = frozenset({"LOOPWISE_TEST_DATABASE_URL"})
# A full variable name; `LOOPWISE_*` and `LOOPWISE_JOBS_*` are prefixes, not names.
_NAME = re.compile(r"\bLOOPWISE_[A-Z0-9_]*[A-Z0-9]\b")


def _settings() -> set[str]:
    return {f"LOOPWISE_{name.upper()}" for name in Settings.model_fields}


def _named_in(pages: Iterable[Path]) -> set[str]:
    return {name for page in pages for name in _NAME.findall(page.read_text("utf-8"))}


def test_every_setting_is_documented() -> None:
    """Each setting's variable is named in full on some page of the site."""
    assert sorted(_settings() - _named_in(_DOCS.rglob("*.md"))) == []


def test_the_configuration_page_names_only_real_settings() -> None:
    """Every variable on the configuration page is one the service reads (or the suite's)."""
    named = _named_in([_DOCS / "configuration.md"])
    assert sorted(named - _settings() - _TEST_ONLY) == []
