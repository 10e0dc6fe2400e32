"""Accounts: users, sessions, orders, order items, preferences, login throttling.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

Every index below serves a query in ``service/accounts/`` (plans checked with EXPLAIN):

- ``users_email_lower_key``: login by email, and the case-insensitive uniqueness that
  makes two simultaneous registrations end in one 201 and one 409. An expression index
  rather than ``citext``: the embedded PostgreSQL ships without contrib.
- ``sessions`` primary key on ``token_hash``: authentication, one index probe per request,
  joined to ``users`` by primary key. ``sessions_user_id_idx``: revoking a user's others, and
  dropping a user's expired sessions when they log in again.
- ``orders_user_id_id_idx``: keyset pagination, newest first, ``WHERE user_id = $1 AND
  id < $2 ORDER BY id DESC LIMIT n`` reads exactly n index entries.
- ``login_throttle``: failure counters shared by every instance (PostgreSQL, not process
  memory), so the limit holds however many ``serve`` processes run.
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE users (
            id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            email         text NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
            display_name  text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 100),
            password_hash text NOT NULL,
            role          text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
            created_at    timestamptz NOT NULL DEFAULT now(),
            updated_at    timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email))")

    op.execute(
        """
        CREATE TABLE sessions (
            token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),
            user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            created_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            revoked_at timestamptz
        )
        """
    )
    op.execute("CREATE INDEX sessions_user_id_idx ON sessions (user_id)")

    op.execute(
        """
        CREATE TABLE orders (
            id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            total_cents bigint NOT NULL CHECK (total_cents >= 0),
            created_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX orders_user_id_id_idx ON orders (user_id, id DESC)")
    op.execute(
        """
        CREATE TABLE order_items (
            order_id         bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
            line_no          integer NOT NULL CHECK (line_no BETWEEN 1 AND 100),
            sku              text NOT NULL CHECK (sku ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
            quantity         integer NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
            unit_price_cents bigint NOT NULL CHECK (unit_price_cents BETWEEN 0 AND 1000000000),
            PRIMARY KEY (order_id, line_no)
        )
        """
    )

    op.execute(
        """
        CREATE TABLE preferences (
            user_id    bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
            document   jsonb NOT NULL CHECK (
                jsonb_typeof(document) = 'object' AND pg_column_size(document) <= 4096
            ),
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )

    # One row per throttled key ("account:<email>", "address:<ip>"): a fixed window of
    # failures. Rows whose window ended are reset on the next failure or purged in batches.
    op.execute(
        """
        CREATE TABLE login_throttle (
            key          text PRIMARY KEY CHECK (length(key) <= 400),
            failures     integer NOT NULL CHECK (failures >= 0),
            window_start timestamptz NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX login_throttle_window_start_idx ON login_throttle (window_start)")


def downgrade() -> None:
    op.execute("DROP TABLE login_throttle, preferences, order_items, orders, sessions, users")
