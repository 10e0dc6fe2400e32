"""Account lifecycle: verified addresses, disabled accounts, one-time tokens, job priority.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

- ``users.email_verified_at``: when the owner proved the address (a verification link or
  a password reset). Accounts that existed before this revision are marked verified at
  their creation time: they had full access already, and taking it away on upgrade
  would lock customers out of what they used yesterday.
- ``users.disabled_at``: set by an operator; a disabled account cannot log in and its
  sessions end (``service/accounts/operators.py``).
- ``account_tokens``: the one-time tokens emailed for verification and password reset,
  stored as ``sha256(token)`` only. Primary key on the hash: consuming a token is one
  index probe. ``account_tokens_open_idx``: superseding a user's older tokens.
- ``email_throttle``: fixed-window counters of requests that send email (reset,
  resend), shared by every instance.
- ``orders.user_id`` becomes nullable with ``ON DELETE SET NULL``: deleting an account
  keeps its orders, anonymised, for the books.
- ``jobs.priority`` and ``jobs.user_id``: a reset email overtakes a backlog of welcome
  emails (``jobs_runnable`` now orders by priority first); deleting an account finds its
  queued jobs by ``jobs_user_id_idx``.
- The ``users_changed`` trigger also announces a change of verification or disabled
  state, so every process's session cache forgets the user at once.
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE users ADD COLUMN email_verified_at timestamptz")
    op.execute("ALTER TABLE users ADD COLUMN disabled_at timestamptz")
    op.execute("UPDATE users SET email_verified_at = created_at")

    op.execute(
        """
        CREATE TABLE account_tokens (
            token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),
            user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            purpose    text NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
            -- The address the token was mailed to: a token proves that address only.
            email      text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            used_at    timestamptz
        )
        """
    )
    op.execute(
        "CREATE INDEX account_tokens_open_idx ON account_tokens (user_id, purpose) "
        "WHERE used_at IS NULL"
    )

    op.execute(
        """
        CREATE TABLE email_throttle (
            key          text PRIMARY KEY CHECK (length(key) <= 400),
            requests     integer NOT NULL CHECK (requests >= 0),
            window_start timestamptz NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX email_throttle_window_start_idx ON email_throttle (window_start)")

    op.execute("ALTER TABLE orders ALTER COLUMN user_id DROP NOT NULL")
    op.execute("ALTER TABLE orders DROP CONSTRAINT orders_user_id_fkey")
    op.execute(
        "ALTER TABLE orders ADD CONSTRAINT orders_user_id_fkey "
        "FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE SET NULL"
    )

    op.execute("ALTER TABLE jobs ADD COLUMN priority smallint NOT NULL DEFAULT 0")
    op.execute("ALTER TABLE jobs ADD COLUMN user_id bigint")
    op.execute("DROP INDEX jobs_runnable")
    op.execute(
        "CREATE INDEX jobs_runnable ON jobs (priority DESC, run_at, id) WHERE state = 'queued'"
    )
    op.execute("CREATE INDEX jobs_user_id_idx ON jobs (user_id) WHERE user_id IS NOT NULL")

    op.execute("DROP TRIGGER users_changed ON users")
    op.execute(
        """
        CREATE TRIGGER users_changed AFTER UPDATE ON users FOR EACH ROW
        WHEN (
            OLD.email IS DISTINCT FROM NEW.email
            OR OLD.display_name IS DISTINCT FROM NEW.display_name
            OR OLD.role IS DISTINCT FROM NEW.role
            OR OLD.email_verified_at IS DISTINCT FROM NEW.email_verified_at
            OR OLD.disabled_at IS DISTINCT FROM NEW.disabled_at
        )
        EXECUTE FUNCTION loopwise_user_changed()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER users_changed ON users")
    op.execute(
        """
        CREATE TRIGGER users_changed AFTER UPDATE ON users FOR EACH ROW
        WHEN (
            OLD.email IS DISTINCT FROM NEW.email
            OR OLD.display_name IS DISTINCT FROM NEW.display_name
            OR OLD.role IS DISTINCT FROM NEW.role
        )
        EXECUTE FUNCTION loopwise_user_changed()
        """
    )
    op.execute("DROP INDEX jobs_user_id_idx")
    op.execute("DROP INDEX jobs_runnable")
    op.execute("CREATE INDEX jobs_runnable ON jobs (run_at, id) WHERE state = 'queued'")
    op.execute("ALTER TABLE jobs DROP COLUMN user_id, DROP COLUMN priority")
    # Anonymised orders cannot go back under a NOT NULL owner: they are dropped.
    op.execute("DELETE FROM orders WHERE user_id IS NULL")
    op.execute("ALTER TABLE orders DROP CONSTRAINT orders_user_id_fkey")
    op.execute(
        "ALTER TABLE orders ADD CONSTRAINT orders_user_id_fkey "
        "FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE"
    )
    op.execute("ALTER TABLE orders ALTER COLUMN user_id SET NOT NULL")
    op.execute("DROP TABLE email_throttle, account_tokens")
    op.execute("ALTER TABLE users DROP COLUMN disabled_at, DROP COLUMN email_verified_at")
