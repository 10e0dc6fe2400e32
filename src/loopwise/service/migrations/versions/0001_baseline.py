"""Baseline: the schema's starting point.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The root every later revision hangs from. No extensions: the embedded PostgreSQL
    # (pgserver) ships without contrib, so the schema uses core features only.
    op.execute("COMMENT ON SCHEMA public IS 'loopwise'")


def downgrade() -> None:
    op.execute("COMMENT ON SCHEMA public IS NULL")
