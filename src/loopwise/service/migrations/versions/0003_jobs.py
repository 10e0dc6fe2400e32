"""Jobs: the durable queue behind background work (the welcome email first).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from alembic import op

revision = "0003"
# Nothing here depends on the accounts tables (0002): it follows them to keep one line
# of revisions.
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE jobs (
            id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            kind          text        NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_.]{0,62}$'),
            payload       jsonb       NOT NULL DEFAULT '{}',
            state         text        NOT NULL DEFAULT 'queued'
                                      CHECK (state IN ('queued', 'running', 'done', 'dead')),
            -- attempts is also the fencing token: each claim increments it, and completing
            -- or failing a job names the attempt it holds, so a worker whose lease was
            -- taken over cannot overwrite the newer attempt's result.
            attempts      integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
            max_attempts  integer     NOT NULL CHECK (max_attempts >= 1),
            run_at        timestamptz NOT NULL DEFAULT now(),
            lease_until   timestamptz,
            lease_owner   text,
            last_error    text,
            created_at    timestamptz NOT NULL DEFAULT now(),
            updated_at    timestamptz NOT NULL DEFAULT now(),
            finished_at   timestamptz,
            CONSTRAINT jobs_lease_iff_running
                CHECK ((state = 'running') = (lease_until IS NOT NULL AND lease_owner IS NOT NULL)),
            CONSTRAINT jobs_finished_iff_final
                CHECK ((state IN ('done', 'dead')) = (finished_at IS NOT NULL))
        )
        """
    )
    # Claiming reads only runnable rows in run_at order; the partial index stays as small
    # as the backlog however many finished jobs the table holds.
    op.execute("CREATE INDEX jobs_runnable ON jobs (run_at, id) WHERE state = 'queued'")
    # Reclaiming expired leases scans only the running jobs.
    op.execute("CREATE INDEX jobs_leased ON jobs (lease_until) WHERE state = 'running'")
    # Pruning and the operators' dead-letter view.
    op.execute(
        "CREATE INDEX jobs_finished ON jobs (state, finished_at) WHERE state IN ('done', 'dead')"
    )
    # The queue churns: vacuum it sooner than the default 20 % of dead rows.
    op.execute(
        "ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.01, "
        "autovacuum_analyze_scale_factor = 0.02)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE jobs")
