"""Jobs carry the W3C trace context of the request that queued them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

``jobs.traceparent`` holds the ``traceparent`` header value (W3C Trace Context, 55
characters) of the span in force when the job was enqueued, so the worker that runs it,
in any process and after any restart, starts its span in the same trace. NULL when the
job was queued outside a trace (tracing off, an operator's SQL). A nullable column
without a default rewrites no rows.
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE jobs ADD COLUMN traceparent text")


def downgrade() -> None:
    op.execute("ALTER TABLE jobs DROP COLUMN traceparent")
