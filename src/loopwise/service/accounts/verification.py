"""Verifying an email address: the link in the welcome email, and asking for another.

The welcome email carries ``<LOOPWISE_PUBLIC_URL>/verify-email?token=...``; the page
there (or a client) posts the token to ``POST /verify-email``. The token works once,
expires after ``LOOPWISE_EMAIL_VERIFY_TTL``, and only the newest link works. What an
unverified account may do is in ``deps.VerifiedUser``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field

from loopwise.service.accounts.email_throttle import EmailThrottle
from loopwise.service.accounts.emails import enqueue_verify_email
from loopwise.service.accounts.tokens import Purpose, consume_token
from loopwise.service.db import transaction
from loopwise.service.deps import CurrentUser, Pool, Sessions, Settings_
from loopwise.service.exceptions import Conflict, Forbidden

__all__ = ["Accepted", "OneTimeToken", "Token", "router"]

router = APIRouter(tags=["users"])

# The shape of what `secrets.token_urlsafe(32)` makes; anything else is refused by the
# schema before a query (a length bound also keeps fuzzed input small).
Token = Annotated[str, Field(min_length=43, max_length=43, pattern=r"^[A-Za-z0-9_-]{43}$")]


class OneTimeToken(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    token: Token


class Accepted(BaseModel):
    """The request was taken; an email follows in the background."""

    detail: str


_VERIFY = """
UPDATE users SET email_verified_at = coalesce(email_verified_at, now()), updated_at = now()
WHERE id = $1
"""


@router.post(
    "/verify-email",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={403: {"description": "The token is unknown, used, expired or superseded."}},
)
async def verify_email(body: OneTimeToken, pool: Pool, sessions: Sessions) -> Response:
    """Mark the address the token was mailed to as verified (the token is used up).

    A well-formed token that is not live is 403, not 400: the request is valid, the
    server refuses what it asks (RFC 9110 section 15.5.4).
    """
    async with transaction(pool) as conn:
        user_id = await consume_token(conn, body.token, Purpose.VERIFY_EMAIL)
        if user_id is None:
            raise Forbidden("The verification link is invalid, used or expired.")
        await conn.execute(_VERIFY, user_id)
    # Read your own writes here at once; the trigger tells the other processes.
    sessions.forget_user(user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/verify-email/resend",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        409: {"description": "The address is verified already."},
        429: {"description": "Too many links requested for this account."},
    },
)
async def resend_verification(caller: CurrentUser, pool: Pool, settings: Settings_) -> Accepted:
    """Email a new verification link; the older links stop working."""
    if caller.email_verified:
        raise Conflict("The email address is verified already.")
    throttle = EmailThrottle(settings.email_throttle_window)
    async with pool.acquire() as conn:
        await throttle.hit(conn, {f"verify:user:{caller.id}": settings.verify_resend_max})
        await enqueue_verify_email(conn, user_id=caller.id, max_attempts=settings.jobs_max_attempts)
    return Accepted(detail="A new verification link is on its way.")
