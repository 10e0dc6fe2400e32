"""Bearer sessions: opaque random tokens, stored only as their SHA-256.

Opaque rather than signed (JWT): a signed token is checked without the database, but
logout and "a password change ends the other sessions" need a revocation lookup on every
request anyway, so the signature would buy nothing and add a key to rotate. The lookup is
free here: it is fused with loading the user, one round trip per authenticated request.

Only ``sha256(token)`` is stored. The token has 256 bits of entropy, so a fast hash is
enough (no salt or argon2 needed), and a leaked ``sessions`` table yields no usable token.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from loopwise.service.db import Connection

__all__ = [
    "Caller",
    "find_caller",
    "hash_token",
    "open_session",
    "revoke_other_sessions",
    "revoke_session",
]

# token_urlsafe(32) gives 43 characters; anything else cannot be ours and costs no query.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated user of this request, and the session they presented."""

    id: int
    email: str
    display_name: str
    role: str
    created_at: datetime
    token_hash: bytes

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


_FIND_CALLER = """
SELECT u.id, u.email, u.display_name, u.role, u.created_at
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
"""


async def find_caller(pool: asyncpg.Pool, token: str) -> Caller | None:
    """The user owning the live session ``token``, or None (unknown, expired, revoked)."""
    if not _TOKEN.fullmatch(token):
        return None
    token_hash = hash_token(token)
    row = await pool.fetchrow(_FIND_CALLER, token_hash)
    if row is None:
        return None
    return Caller(row[0], row[1], row[2], row[3], row[4], token_hash)


# Logging in also drops the user's sessions that have expired, so the table stays the
# size of the live sessions without a sweeper.
_OPEN_SESSION = """
WITH expired AS (DELETE FROM sessions WHERE user_id = $2 AND expires_at <= now())
INSERT INTO sessions (token_hash, user_id, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3))
RETURNING expires_at
"""


async def open_session(
    conn: Connection | asyncpg.Pool, user_id: int, ttl: float
) -> tuple[str, datetime]:
    """Create a session for ``user_id``; returns the token (shown once) and its expiry."""
    token = secrets.token_urlsafe(32)
    expires_at: datetime = await conn.fetchval(_OPEN_SESSION, hash_token(token), user_id, ttl)
    return token, expires_at


async def revoke_session(pool: asyncpg.Pool, token_hash: bytes) -> None:
    await pool.execute(
        "UPDATE sessions SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL",
        token_hash,
    )


async def revoke_other_sessions(conn: Connection, user_id: int, keep: bytes) -> int:
    """Revoke every live session of ``user_id`` except ``keep``; returns how many."""
    status: str = await conn.execute(
        "UPDATE sessions SET revoked_at = now() "
        "WHERE user_id = $1 AND token_hash <> $2 AND revoked_at IS NULL",
        user_id,
        keep,
    )
    return int(status.rsplit(" ", 1)[-1])
