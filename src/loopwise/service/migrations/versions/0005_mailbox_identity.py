"""Mailbox identity: ``users.email_key`` replaces Unicode lower-casing as the unique key.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

The old unique index on ``lower(email)`` merged distinct mailboxes: PostgreSQL's
``lower()`` maps KELVIN SIGN (U+212A) to "k" and "İ" to "i̇", so ``\u212aelvin@`` and
``kelvin@`` were one account. The identity is now the local part with only its ASCII
letters lower-cased, and the domain as IDNA A-labels (``service/accounts/mailboxes.py``).

Existing rows get their key computed here, in Python, with the same rule. The new key
never equates two addresses the old index told apart except where the old index missed
a domain's IDNA equivalence (``BÜCHER.example`` and ``xn--bcher-kva.example``); if two
existing rows meet that way the migration stops and names them, rather than choose
whose account survives. Rows inserted later by SQL that names no key get one from a
trigger, exact for ASCII domains and left in Unicode (lower-cased) otherwise.
"""

import idna
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _key(email: str) -> str:
    # A copy of accounts/mailboxes.py's mailbox_key, frozen with this revision.
    local, _, domain = email.rpartition("@")
    local = local.translate(_ASCII_LOWER)
    try:
        ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        ascii_domain = domain.lower()  # stored before validation was this strict
    return f"{local}@{ascii_domain}"


def upgrade() -> None:
    op.execute("ALTER TABLE users ADD COLUMN email_key text")
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, email FROM users ORDER BY id")).all()
    owners: dict[str, int] = {}
    for user_id, email in rows:
        key = _key(email)
        if key in owners:
            raise RuntimeError(
                f"users {owners[key]} and {user_id} are one mailbox under the new rule "
                f"({key!r}); merge or rename one of them by hand, then migrate again"
            )
        owners[key] = user_id
        bind.execute(
            sa.text("UPDATE users SET email_key = :key WHERE id = :id"), {"key": key, "id": user_id}
        )
    op.execute(
        """
        CREATE FUNCTION loopwise_users_email_key() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.email_key IS NULL THEN
                NEW.email_key := translate(
                        regexp_replace(NEW.email, '@[^@]*$', ''),
                        'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'
                    ) || '@' || lower(substring(NEW.email FROM '@([^@]*)$'));
            END IF;
            RETURN NEW;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER users_email_key BEFORE INSERT ON users "
        "FOR EACH ROW EXECUTE FUNCTION loopwise_users_email_key()"
    )
    op.execute("ALTER TABLE users ALTER COLUMN email_key SET NOT NULL")
    op.execute("CREATE UNIQUE INDEX users_email_key_key ON users (email_key)")
    op.execute("DROP INDEX users_email_lower_key")


def downgrade() -> None:
    op.execute("CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email))")
    op.execute("DROP INDEX users_email_key_key")
    op.execute("DROP TRIGGER users_email_key ON users")
    op.execute("DROP FUNCTION loopwise_users_email_key()")
    op.execute("ALTER TABLE users DROP COLUMN email_key")
