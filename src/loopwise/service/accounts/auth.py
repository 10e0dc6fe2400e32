"""Log in and out: bearer tokens, constant-time answers, throttled failures.

A login for an unknown email verifies the password against a dummy hash with the same
parameters and records a failure just like a wrong password, so the status, the body and
the time taken say nothing about which emails have accounts. A disabled account's login
fails the same way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field

from loopwise.service.accounts.mailboxes import Email, mailbox_key
from loopwise.service.accounts.throttle import LoginThrottle
from loopwise.service.db import transaction
from loopwise.service.deps import ClientAddress, CurrentUser, Hasher, Pool, Sessions, Settings_
from loopwise.service.exceptions import Unauthenticated
from loopwise.service.http.responses import HASHING_BUSY, LOGIN_THROTTLED, Answer, declare
from loopwise.service.identity.sessions import open_session, revoke_session

__all__ = ["router"]

router = APIRouter(tags=["auth"])

WRONG_CREDENTIALS = Answer(
    401, "Wrong email or password (one answer for both).", ("WWW-Authenticate",)
)


class Credentials(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    email: Email
    password: Annotated[str, Field(min_length=1, max_length=128)]


class Token(BaseModel):
    # Every key is always sent: required in the schema, defaults included.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the scheme's name, not a secret
    expires_at: datetime


# The mailbox's identity (accounts/mailboxes.py), never a case mapping of it.
_FIND_LOGIN = """
SELECT id, password_hash, disabled_at IS NOT NULL AS disabled
FROM users WHERE email_key = $1
"""


@router.post(
    "/login",
    responses=declare(WRONG_CREDENTIALS, LOGIN_THROTTLED, HASHING_BUSY),
)
async def login(
    body: Credentials,
    pool: Pool,
    passwords: Hasher,
    settings: Settings_,
    address: ClientAddress,
) -> Token:
    """Exchange an email and password for a bearer token."""
    account = mailbox_key(body.email)
    throttle = LoginThrottle.for_attempt(settings, account, address)
    await throttle.check(pool)
    row = await pool.fetchrow(_FIND_LOGIN, account)
    stored: str | None = None if row is None else row["password_hash"]
    # Always verify, against the dummy hash when there is no such user: same time taken.
    matches = await passwords.verify(stored, body.password)
    # A disabled account gets the answer of a wrong password: an operator disabled it, and
    # whoever holds the password (the owner or a thief) learns nothing from the login.
    if row is None or stored is None or not matches or row["disabled"]:
        await throttle.record_failure(pool)
        raise Unauthenticated("Wrong email or password.")
    user_id: int = row["id"]
    # The cost parameters were raised since this hash was made: upgrade it now, the only
    # moment the plain password is at hand (and before holding a connection).
    new_hash = await passwords.hash(body.password) if passwords.needs_rehash(stored) else None
    async with transaction(pool) as conn:
        await throttle.clear_account(conn)
        if new_hash is not None:
            await conn.execute(
                "UPDATE users SET password_hash = $2 WHERE id = $1 AND password_hash = $3",
                user_id,
                new_hash,
                stored,
            )
        token, expires_at = await open_session(conn, user_id, settings.session_ttl)
    return Token(access_token=token, expires_at=expires_at)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(caller: CurrentUser, pool: Pool, sessions: Sessions) -> Response:
    """Revoke the token presented with this request, on every instance."""
    await revoke_session(pool, caller.token_hash)
    # This process forgets it before answering; the others hear it from PostgreSQL.
    sessions.forget_session(caller.token_hash)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
