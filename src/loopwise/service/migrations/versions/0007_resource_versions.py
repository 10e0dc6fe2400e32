"""A version per mutable resource, the source of its ETag.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

``users.version`` counts changes to what ``GET /users/me`` shows (email, display name,
whether the address is verified; role too, which announces itself the same way);
``preferences.version`` counts changes to
the document. Triggers bump them, not application code, so a change made by any path (an
endpoint, an operator's SQL) changes the ETag, and the users trigger fires on exactly the
columns whose change ``users_changed`` (revisions 0004 and 0006) announces to the session caches:
a cached caller's version is never older than its cached name.

A password change bumps nothing: the representation is unchanged, and the password
change has its own guard (``password_hash = <the one verified>``). Adding a column with a
constant default rewrites no rows (PostgreSQL 11+), so this is instant on a large table.
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE users ADD COLUMN version bigint NOT NULL DEFAULT 1")
    op.execute("ALTER TABLE preferences ADD COLUMN version bigint NOT NULL DEFAULT 1")
    op.execute(
        """
        CREATE FUNCTION loopwise_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.version := OLD.version + 1;
            RETURN NEW;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER users_version BEFORE UPDATE ON users FOR EACH ROW
        WHEN (
            OLD.email IS DISTINCT FROM NEW.email
            OR OLD.display_name IS DISTINCT FROM NEW.display_name
            OR OLD.role IS DISTINCT FROM NEW.role
            OR OLD.email_verified_at IS DISTINCT FROM NEW.email_verified_at
        )
        EXECUTE FUNCTION loopwise_bump_version()
        """
    )
    op.execute(
        """
        CREATE TRIGGER preferences_version BEFORE UPDATE ON preferences FOR EACH ROW
        WHEN (OLD.document IS DISTINCT FROM NEW.document)
        EXECUTE FUNCTION loopwise_bump_version()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER preferences_version ON preferences")
    op.execute("DROP TRIGGER users_version ON users")
    op.execute("DROP FUNCTION loopwise_bump_version()")
    op.execute("ALTER TABLE preferences DROP COLUMN version")
    op.execute("ALTER TABLE users DROP COLUMN version")
