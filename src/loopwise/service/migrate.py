"""Apply the schema's versioned migrations (Alembic, raw SQL revisions).

Safe to run twice and from several processes at once: every run takes the same
PostgreSQL advisory lock inside the migration transaction, so a second runner waits,
then finds the schema current and does nothing.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

__all__ = ["MIGRATION_LOCK_KEY", "expected_revision", "migrate", "sqlalchemy_url"]

# pg_advisory_xact_lock key shared by every migrating process ("loopwise" in hex, trimmed).
MIGRATION_LOCK_KEY = 0x6C6F6F7077697365 & 0x7FFFFFFFFFFFFFFF

_SCRIPTS = Path(__file__).with_name("migrations")


def _config(dsn: str = "") -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    config.attributes["dsn"] = dsn
    return config


def sqlalchemy_url(dsn: str) -> str:
    """Turn a libpq-style DSN into the SQLAlchemy URL for the asyncpg dialect."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(scheme="postgresql+asyncpg"))


def migrate(dsn: str) -> None:
    """Upgrade the database at ``dsn`` to the newest revision. Blocking: run it off the loop."""
    command.upgrade(_config(dsn), "head")


def expected_revision() -> str | None:
    """The newest revision shipped with this code. Reads files: call it off the loop."""
    return ScriptDirectory.from_config(_config()).get_current_head()
