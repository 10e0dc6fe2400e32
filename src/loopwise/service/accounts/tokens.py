"""One-time tokens mailed to a user: verify the address, reset the password.

    token = await issue_token(conn, user_id, Purpose.RESET_PASSWORD, email, ttl=1800)
    user_id = await consume_token(conn, token, Purpose.RESET_PASSWORD)  # None: refused

Only ``sha256(token)`` is stored, as for sessions: the token has 256 bits of entropy, so a
fast hash suffices and a leaked table yields nothing usable. A token works once, until its
expiry, only for the address it was mailed to, and only while its user is enabled.
Issuing a token deletes the user's earlier open tokens of the same purpose (the newest
email is the only one that works), and :func:`revoke_tokens` ends them on a password
change (OWASP Forgot Password Cheat Sheet: tokens single use, expiring, invalidated
once the password is changed).
"""

from __future__ import annotations

import enum
import re
import secrets

import asyncpg

from loopwise.service.db import Connection
from loopwise.service.identity.sessions import hash_token

__all__ = ["Purpose", "consume_token", "issue_token", "revoke_tokens", "token_user"]

# token_urlsafe(32) gives 43 characters; anything else is refused without a query.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


class Purpose(enum.StrEnum):
    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"  # noqa: S105 - a purpose, not a secret


# The older open tokens go in the same statement as the new one, so two concurrent
# issues leave exactly one open token (the later commit's DELETE sees the earlier row).
_ISSUE = """
WITH superseded AS (
    DELETE FROM account_tokens WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL
)
INSERT INTO account_tokens (token_hash, user_id, purpose, email, expires_at)
VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
"""


async def issue_token(
    conn: Connection | asyncpg.Pool, user_id: int, purpose: Purpose, email: str, *, ttl: float
) -> str:
    """A new token for ``user_id`` (shown once), ending its older ones of ``purpose``."""
    if ttl <= 0:
        raise ValueError(f"`ttl` must be positive, got {ttl}")
    token = secrets.token_urlsafe(32)
    await conn.execute(_ISSUE, hash_token(token), user_id, purpose.value, email, ttl)
    return token


# Live means: unused, unexpired, mailed to the user's current address, user enabled.
_LIVE = """
t.token_hash = $1 AND t.purpose = $2 AND t.used_at IS NULL AND t.expires_at > now()
AND u.id = t.user_id AND t.email = u.email AND u.disabled_at IS NULL
"""

# The conditions sit on the updated row itself (not in a subquery), so a concurrent use
# that committed first is seen when the row lock is granted: the loser updates nothing.
_CONSUME = f"""
UPDATE account_tokens AS t SET used_at = now() FROM users AS u
WHERE {_LIVE}
RETURNING t.user_id
"""  # noqa: S608 - composed from constants, no input
_PEEK = f"SELECT t.user_id FROM account_tokens t, users u WHERE {_LIVE}"  # noqa: S608 - constants


async def token_user(conn: Connection | asyncpg.Pool, token: str, purpose: Purpose) -> int | None:
    """The user a live ``token`` belongs to, without using it up; None when refused."""
    if not _TOKEN.fullmatch(token):
        return None
    user_id: int | None = await conn.fetchval(_PEEK, hash_token(token), purpose.value)
    return user_id


async def consume_token(
    conn: Connection | asyncpg.Pool, token: str, purpose: Purpose
) -> int | None:
    """Use ``token`` up; returns its user, or None when it is not live (see the rule).

    One ``UPDATE``: of two concurrent uses, the row lock lets exactly one through.
    """
    if not _TOKEN.fullmatch(token):
        return None
    user_id: int | None = await conn.fetchval(_CONSUME, hash_token(token), purpose.value)
    return user_id


async def revoke_tokens(
    conn: Connection | asyncpg.Pool, user_id: int, purpose: Purpose | None = None
) -> int:
    """Delete ``user_id``'s open tokens (of ``purpose``, or all); returns how many."""
    status: str = await conn.execute(
        "DELETE FROM account_tokens WHERE user_id = $1 AND used_at IS NULL "
        "AND ($2::text IS NULL OR purpose = $2)",
        user_id,
        None if purpose is None else purpose.value,
    )
    return int(status.rsplit(" ", 1)[-1])
