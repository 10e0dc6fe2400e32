"""Bearer sessions: opaque random tokens, stored only as their SHA-256.

Opaque rather than signed (JWT): a signed token is checked without the database, but
logout and "a password change ends the other sessions" need a revocation lookup on every
request anyway, so the signature would buy nothing and add a key to rotate. The lookup is
fused with loading the user (one round trip), and each process keeps the result in memory
until PostgreSQL announces a change (``session_cache.py``), so most requests need none.

Only ``sha256(token)`` is stored. The token has 256 bits of entropy, so a fast hash is
enough (no salt or argon2 needed), and a leaked ``sessions`` table yields no usable token.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from loopwise.service.db import Connection

__all__ = [
    "Caller",
    "hash_token",
    "load_caller",
    "open_session",
    "revoke_all_sessions",
    "revoke_other_sessions",
    "revoke_session",
]


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated user of this request, and the session they presented."""

    id: int
    email: str
    display_name: str
    role: str
    created_at: datetime
    token_hash: bytes
    version: int = 1  # users.version: the profile's ETag (service/http/conditional.py)
    email_verified: bool = False


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


_LOAD_CALLER = """
SELECT u.id, u.email, u.display_name, u.role, u.created_at,
       extract(epoch FROM s.expires_at - now())::float8, u.version,
       u.email_verified_at IS NOT NULL
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
  AND u.disabled_at IS NULL
"""


async def load_caller(pool: asyncpg.Pool, token_hash: bytes) -> tuple[Caller, float] | None:
    """The user owning the live session ``token_hash`` and the seconds it has left.

    None when the session is unknown, expired or revoked, or its user is disabled. The
    seconds are measured on the database's clock, so a caller may turn them into a
    deadline on its own clock.
    """
    row = await pool.fetchrow(_LOAD_CALLER, token_hash)
    if row is None:
        return None
    return Caller(row[0], row[1], row[2], row[3], row[4], token_hash, row[6], row[7]), row[5]


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


async def revoke_all_sessions(conn: Connection | asyncpg.Pool, user_id: int) -> int:
    """Revoke every live session of ``user_id``; returns how many.

    Each revoked row is announced by the ``sessions_changed`` trigger when the transaction
    commits, so every process's session cache forgets it (migration 0004).
    """
    status: str = await conn.execute(
        "UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
        user_id,
    )
    return int(status.rsplit(" ", 1)[-1])
