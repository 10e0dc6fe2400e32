"""Announce every change to a preferences document, for the preferences cache.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

Each ``serve`` process keeps the preferences documents it has read in memory
(``service/identity/preferences_cache.py``), under the session cache's rule (migration
0004): triggers, not application code, announce each change, so every write path (our
``PUT``, an operator's SQL, the cascade from deleting a user) reaches every process, and
``pg_notify`` in a trigger is delivered only when its transaction commits. Payloads on
channel ``loopwise_preferences``: the user id whose document was inserted, updated or
deleted; ``*`` when the table was truncated. A channel of its own: a process of an
earlier version, listening on ``loopwise_auth``, would take an unknown payload there for
"forget every session".
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION loopwise_preferences_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP <> 'INSERT' THEN
                PERFORM pg_notify('loopwise_preferences', OLD.user_id::text);
            END IF;
            IF TG_OP <> 'DELETE' THEN
                PERFORM pg_notify('loopwise_preferences', NEW.user_id::text);
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION loopwise_preferences_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('loopwise_preferences', '*');
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER preferences_changed AFTER INSERT OR UPDATE OR DELETE ON preferences "
        "FOR EACH ROW EXECUTE FUNCTION loopwise_preferences_changed()"
    )
    op.execute(
        "CREATE TRIGGER preferences_truncated AFTER TRUNCATE ON preferences "
        "FOR EACH STATEMENT EXECUTE FUNCTION loopwise_preferences_truncated()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER preferences_truncated ON preferences")
    op.execute("DROP TRIGGER preferences_changed ON preferences")
    op.execute("DROP FUNCTION loopwise_preferences_truncated(), loopwise_preferences_changed()")
