"""A forgotten password: ask for a reset link, then set a new password with it.

``POST /password-reset`` answers 202 with the same body and headers whether or not an
account uses the address, and does the same work either way: it counts the request
against the address's and the client's throttles and queues one job. Whether an account
exists is found out by the worker, off the request path, which drops the job when there
is none (``accounts/emails.py``). So neither the answer nor its timing tells accounts
apart (measured: docs/operations/accounts.md).

``POST /password-reset/confirm`` sets the password, marks the address verified (the link
reached it), and ends every session of the account on every instance, every other reset
link with it.
"""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, EmailStr

from loopwise.service.accounts.email_throttle import EmailThrottle
from loopwise.service.accounts.emails import enqueue_password_reset
from loopwise.service.accounts.mailboxes import mailbox_key
from loopwise.service.accounts.throttle import LoginThrottle
from loopwise.service.accounts.tokens import Purpose, consume_token, revoke_tokens, token_user
from loopwise.service.accounts.verification import Accepted, Token
from loopwise.service.db import transaction
from loopwise.service.deps import ClientAddress, Hasher, Pool, Sessions, Settings_
from loopwise.service.exceptions import Forbidden
from loopwise.service.identity.passwords import NewPassword
from loopwise.service.identity.sessions import revoke_all_sessions

__all__ = ["RESET_ACCEPTED", "router"]

router = APIRouter(tags=["auth"])

RESET_ACCEPTED = "If an account uses this address, a reset link is on its way."


class ResetRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    email: EmailStr


class ResetConfirmation(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    token: Token
    password: NewPassword


@router.post(
    "/password-reset",
    status_code=status.HTTP_202_ACCEPTED,
    responses={429: {"description": "Too many resets asked for this address or client."}},
)
async def request_reset(
    body: ResetRequest, pool: Pool, settings: Settings_, address: ClientAddress
) -> Accepted:
    """Email a reset link to the account using this address, if there is one."""
    throttle = EmailThrottle(settings.email_throttle_window)
    # Keyed by what was typed, never by an account: a 429 says nothing about accounts.
    async with pool.acquire() as conn:
        await throttle.hit(
            conn,
            {
                f"reset:email:{mailbox_key(body.email)}": settings.password_reset_max_per_email,
                f"reset:client:{address}": settings.password_reset_max_per_client,
            },
        )
        await enqueue_password_reset(
            conn, email=body.email, max_attempts=settings.jobs_max_attempts
        )
    return Accepted(detail=RESET_ACCEPTED)


_STORE_NEW_HASH = """
UPDATE users
SET password_hash = $2, email_verified_at = coalesce(email_verified_at, now()),
    updated_at = now()
WHERE id = $1
RETURNING email
"""


@router.post(
    "/password-reset/confirm",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={403: {"description": "The token is unknown, used, expired or superseded."}},
)
async def confirm_reset(
    body: ResetConfirmation,
    pool: Pool,
    passwords: Hasher,
    settings: Settings_,
    address: ClientAddress,
    sessions: Sessions,
) -> Response:
    """Set a new password with a reset token; every session of the account ends."""
    invalid = "The reset link is invalid, used or expired; ask for a new one."
    # Checked before hashing, so a dead token costs one query, not an argon2 hash; the
    # token is used up below, in the transaction that sets the password.
    if await token_user(pool, body.token, Purpose.RESET_PASSWORD) is None:
        raise Forbidden(invalid)
    new_hash = await passwords.hash(body.password)
    async with transaction(pool) as conn:
        user_id = await consume_token(conn, body.token, Purpose.RESET_PASSWORD)
        if user_id is None:  # used or superseded meanwhile
            raise Forbidden(invalid)
        email: str = await conn.fetchval(_STORE_NEW_HASH, user_id, new_hash)
        await revoke_all_sessions(conn, user_id)
        await revoke_tokens(conn, user_id, Purpose.RESET_PASSWORD)
        # The owner proved the address: lift the login lockout they may have run into.
        await LoginThrottle.for_attempt(settings, mailbox_key(email), address).clear_account(conn)
    # This process forgets at once; the session triggers tell every other one.
    sessions.forget_user(user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
