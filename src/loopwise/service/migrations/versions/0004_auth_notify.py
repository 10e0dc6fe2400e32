"""Announce every change to a session or to a user's public fields, for the auth cache.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25

Each ``serve`` process keeps the sessions it has seen in memory
(``service/identity/session_cache.py``). Triggers, not application code, send the
announcements, so a change made by any path — our endpoints, an operator's SQL, a
cascade from deleting a user — reaches every process. ``pg_notify`` inside a trigger
is delivered only if and when its transaction commits, so a rolled-back change
announces nothing. Payloads on channel ``loopwise_auth``:

- ``s:<hex sha256>``: this session was updated or deleted (logout, expiry, clean-up);
- ``u:<user id>``: this user's email, display name or role changed, or the user is gone;
- ``*``: a table was truncated; forget everything.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION loopwise_session_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('loopwise_auth', 's:' || encode(OLD.token_hash, 'hex'));
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION loopwise_user_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('loopwise_auth', 'u:' || OLD.id);
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION loopwise_auth_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('loopwise_auth', '*');
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER sessions_changed AFTER UPDATE OR DELETE ON sessions "
        "FOR EACH ROW EXECUTE FUNCTION loopwise_session_changed()"
    )
    # A new password hash or updated_at alone changes nothing a request sees; a password
    # change revokes the other sessions, and that announces itself through sessions.
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
    op.execute(
        "CREATE TRIGGER users_deleted AFTER DELETE ON users "
        "FOR EACH ROW EXECUTE FUNCTION loopwise_user_changed()"
    )
    for table in ("sessions", "users"):
        op.execute(
            f"CREATE TRIGGER {table}_truncated AFTER TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION loopwise_auth_truncated()"
        )


def downgrade() -> None:
    for table in ("sessions", "users"):
        op.execute(f"DROP TRIGGER {table}_truncated ON {table}")
    op.execute("DROP TRIGGER users_deleted ON users")
    op.execute("DROP TRIGGER users_changed ON users")
    op.execute("DROP TRIGGER sessions_changed ON sessions")
    op.execute(
        "DROP FUNCTION loopwise_auth_truncated(), loopwise_user_changed(), "
        "loopwise_session_changed()"
    )
