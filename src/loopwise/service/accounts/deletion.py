"""Deleting your account: ``DELETE /users/me`` with the current password.

One transaction erases the personal data and queues the confirmation email, so a crash
leaves either the whole account or none of it:

- erased: the user row (email, name, password hash), its sessions (every instance
  forgets them through the session triggers), preferences, one-time tokens, queued and
  finished jobs naming the account or its address, and its throttle counters;
- kept: orders and their items, with ``user_id`` set to NULL (``ON DELETE SET NULL``):
  invoices must be kept for years by accounting law (e.g. 10 years under the German
  HGB section 257, 6 under UK company law), and once unlinked they name nobody.

Requests of the same user that are in flight meet a row lock or a missing row, never a
half-deleted account: writes referencing the user fail their foreign key and answer 401,
and the next lookup of the token finds no session.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field

from loopwise.service.accounts.email_throttle import forget_keys
from loopwise.service.accounts.emails import enqueue_account_deleted
from loopwise.service.accounts.mailboxes import mailbox_key
from loopwise.service.accounts.throttle import LoginThrottle
from loopwise.service.db import transaction
from loopwise.service.deps import ClientAddress, CurrentUser, Hasher, Pool, Sessions, Settings_
from loopwise.service.exceptions import Forbidden, Unauthenticated

__all__ = ["router"]

router = APIRouter(tags=["users"])


class DeletionRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    password: Annotated[str, Field(min_length=1, max_length=128)]


_DELETE_USER = "DELETE FROM users WHERE id = $1 RETURNING email, display_name"
# Running jobs are left to finish: a worker holds them, and each looks the account up
# (finding none) or only ever had the address. Everything else naming it goes.
_DELETE_JOBS = """
DELETE FROM jobs
WHERE state <> 'running' AND (user_id = $1 OR lower(payload ->> 'email') = lower($2))
"""


@router.delete(
    "/users/me",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        403: {"description": "`password` is wrong."},
        429: {"description": "Too many wrong passwords for this account or address."},
    },
)
async def delete_me(
    body: DeletionRequest,
    caller: CurrentUser,
    pool: Pool,
    passwords: Hasher,
    settings: Settings_,
    address: ClientAddress,
    sessions: Sessions,
) -> Response:
    """Delete your account and personal data; orders stay, anonymised. Ends every session."""
    # Guessing the password with a stolen token is a login attempt: same throttle.
    throttle = LoginThrottle.for_attempt(settings, mailbox_key(caller.email), address)
    await throttle.check(pool)
    stored = await pool.fetchval("SELECT password_hash FROM users WHERE id = $1", caller.id)
    if stored is None:
        raise Unauthenticated("The account no longer exists.")
    if not await passwords.verify(stored, body.password):
        await throttle.record_failure(pool)
        raise Forbidden("password is wrong.")
    try:
        async with transaction(pool) as conn:
            row = await conn.fetchrow(_DELETE_USER, caller.id)
            if row is None:  # a concurrent deletion won
                raise Unauthenticated("The account no longer exists.")
            email, name = row["email"], row["display_name"]
            await conn.execute(_DELETE_JOBS, caller.id, email)
            await throttle.clear_account(conn)
            await forget_keys(conn, [f"reset:email:{email.lower()}", f"verify:user:{caller.id}"])
            await enqueue_account_deleted(
                conn, email=email, name=name, max_attempts=settings.jobs_max_attempts
            )
    finally:
        sessions.forget_user(caller.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
