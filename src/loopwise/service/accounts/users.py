"""Users: register, read and update yourself, read a user by id.

``GET /users/{id}`` is the hottest path: authentication already loaded the caller's row in
its one query, so reading yourself costs no second query, and anyone else gets 404 (not
403, which would say the id exists).
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Path, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from loopwise.service.accounts.mailboxes import Email, has_ascii_local_part, mailbox_key
from loopwise.service.accounts.throttle import LoginThrottle
from loopwise.service.accounts.tokens import Purpose, revoke_tokens
from loopwise.service.db import Connection, transaction
from loopwise.service.deps import ClientAddress, CurrentUser, Hasher, Pool, Sessions, Settings_
from loopwise.service.exceptions import Conflict, Forbidden, NotFound, Unauthenticated
from loopwise.service.http.conditional import Precondition, entity_tag, fresh, not_modified
from loopwise.service.http.responses import (
    HASHING_BUSY,
    LOGIN_THROTTLED,
    NOT_MODIFIED,
    PRECONDITION_FAILED,
    Answer,
    conditional_headers,
    declare,
)
from loopwise.service.identity.passwords import NewPassword
from loopwise.service.identity.sessions import Caller, revoke_other_sessions
from loopwise.service.jobs.welcome import enqueue_welcome_email

__all__ = ["DisplayName", "User", "create_user", "router"]

router = APIRouter(tags=["users"])

BIGINT_MAX = 2**63 - 1

EMAIL_TAKEN = Answer(409, "An account with this email exists (compared case-insensitively).")
NO_SUCH_USER = Answer(404, "No such user visible to you: any id but your own.")
WRONG_CURRENT_PASSWORD = Answer(403, "`current_password` is wrong.")
PASSWORD_CHANGED = Answer(409, "The password was changed meanwhile by another request.")


# Unicode categories a name never needs: controls (Cc: NUL, which PostgreSQL text cannot
# hold, newlines that split headers), invisible formatting (Cf: U+200B ZERO WIDTH SPACE,
# U+202E RIGHT-TO-LEFT OVERRIDE, which make one name look like another), surrogates and
# unassigned code points (Cs, Cn), and line and paragraph separators (Zl, Zp).
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"})


def _printable(value: str) -> str:
    if any(unicodedata.category(ch) in _REFUSED_CATEGORIES for ch in value):
        raise ValueError("must not contain control or invisible formatting characters")
    if not value.strip():
        raise ValueError("must not be blank")
    return value.strip()


DisplayName = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_printable)]


class User(BaseModel):
    """A user as clients see it: never the password or its hash."""

    id: int
    email: str
    display_name: str
    created_at: datetime
    email_verified: bool = Field(
        description="Whether the owner proved the address (verification link or reset)."
    )

    @classmethod
    def of(cls, caller: Caller) -> User:
        return cls(
            id=caller.id,
            email=caller.email,
            display_name=caller.display_name,
            created_at=caller.created_at,
            email_verified=caller.email_verified,
        )


class Registration(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    email: Email
    password: NewPassword
    display_name: DisplayName


class UserUpdate(BaseModel):
    """Fields to change; a new ``password`` needs the ``current_password``."""

    model_config = ConfigDict(strict=True, extra="forbid")

    display_name: DisplayName | None = None
    password: NewPassword | None = None
    current_password: Annotated[str, Field(min_length=1, max_length=128)] | None = None

    @model_validator(mode="after")
    def _password_needs_current(self) -> UserUpdate:
        if self.password is not None and self.current_password is None:
            raise ValueError("current_password is required to set a new password")
        return self


_INSERT_USER = """
INSERT INTO users (email, email_key, display_name, password_hash)
VALUES ($1, $2, $3, $4)
RETURNING id, email, display_name, created_at, email_verified_at IS NOT NULL AS email_verified
"""


async def create_user(conn: Connection, email: str, display_name: str, password_hash: str) -> User:
    """Insert a user inside the caller's transaction on ``conn``.

    Raises:
        Conflict: the mailbox is taken (``mailboxes.py``: same local part, same domain). The
            unique index decides, so of two simultaneous registrations exactly one wins.
    """
    try:
        row = await conn.fetchrow(
            _INSERT_USER, email, mailbox_key(email), display_name, password_hash
        )
    except asyncpg.UniqueViolationError:
        raise Conflict("An account with this email already exists.") from None
    assert row is not None
    return User(**dict(row))


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    responses=declare(EMAIL_TAKEN, HASHING_BUSY),
)
async def register(body: Registration, pool: Pool, passwords: Hasher, settings: Settings_) -> User:
    """Create an account; its welcome email is sent in the background, and never lost.

    The password is hashed with argon2id off the event loop. The user row and the welcome
    email's job commit in one transaction (a transactional outbox): a registration that
    committed has exactly one job, one that rolled back has none, and the response never
    waits for the mail server. The welcome email carries the link that verifies the
    address (``POST /verify-email``).
    """
    if not settings.smtp_utf8 and not has_ascii_local_part(body.email):
        # Deliverable only with SMTPUTF8, which the relay is not known to offer: refuse
        # now rather than accept an account whose welcome email can never be sent.
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "email"),
                    "msg": "the part before @ must be ASCII: this service's mail relay "
                    "cannot deliver to internationalised mailboxes",
                    "type": "value_error",
                }
            ]
        )
    password_hash = await passwords.hash(body.password)
    async with transaction(pool) as conn:
        user = await create_user(conn, body.email, body.display_name, password_hash)
        await enqueue_welcome_email(
            conn,
            email=user.email,
            name=user.display_name,
            max_attempts=settings.jobs_max_attempts,
            user_id=user.id,
        )
    return user


@router.get(
    "/users/me",
    response_model=User,
    responses=declare(NOT_MODIFIED, etag=True),
    openapi_extra=conditional_headers("If-None-Match"),
)
async def read_me(caller: CurrentUser, request: Request, response: Response) -> User | Response:
    """The authenticated user; `ETag` is the version to send back in `If-Match`."""
    # The version came with the caller (the session's one query, or the cache): no query.
    tag = entity_tag("u", caller.id, caller.version)
    if fresh(request.headers, tag):
        return not_modified(tag)
    response.headers["ETag"] = tag
    return User.of(caller)


# No ETag here: this is the hottest route, it cannot change the user, and `/users/me` is
# the resource to revalidate and update.
@router.get("/users/{user_id}", responses=declare(NO_SUCH_USER))
async def read_user(
    user_id: Annotated[int, Path(ge=1, le=BIGINT_MAX)], caller: CurrentUser
) -> User:
    """A user by id: yourself only, anyone else is 404."""
    # An admin role exists in the schema; reading others stays closed until an admin
    # surface is designed, so this path remains one query for everyone.
    if user_id != caller.id:
        raise NotFound(f"No user with id {user_id}.")
    return User.of(caller)


# Locked for the transaction: the precondition, the password guard and the writes all see
# the same row, so a PATCH is applied whole or not at all.
_LOCK_USER = """
SELECT id, email, display_name, created_at, version, updated_at, password_hash,
       email_verified_at IS NOT NULL AS email_verified
FROM users WHERE id = $1 FOR UPDATE
"""
# `users_version` (a trigger) bumps `version` when the name changes.
_UPDATE_NAME = """
UPDATE users SET display_name = $2, updated_at = now() WHERE id = $1
RETURNING id, email, display_name, created_at, version,
          email_verified_at IS NOT NULL AS email_verified
"""
_UPDATE_HASH = "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1"


@router.patch(
    "/users/me",
    responses=declare(
        WRONG_CURRENT_PASSWORD,
        PASSWORD_CHANGED,
        PRECONDITION_FAILED,
        LOGIN_THROTTLED,
        HASHING_BUSY,
        etag=True,
    ),
    openapi_extra=conditional_headers("If-Match", "If-Unmodified-Since"),
)
async def update_me(
    body: UserUpdate,
    caller: CurrentUser,
    pool: Pool,
    passwords: Hasher,
    settings: Settings_,
    address: ClientAddress,
    sessions: Sessions,
    request: Request,
    response: Response,
) -> User:
    """Change the display name and/or the password; a new password ends other sessions.

    Only the fields sent change, so `If-Match` is optional here (412 when it names an old
    version); the new `ETag` comes back with the result.
    """
    precondition = Precondition.of(request.headers, "u", caller.id, required=False)
    verified: tuple[str, str] | None = None
    if body.password is not None and body.current_password is not None:
        verified = await _verify_and_hash(
            pool, passwords, caller, body.current_password, body.password, settings, address
        )
    try:
        async with transaction(pool) as conn:
            row = await conn.fetchrow(_LOCK_USER, caller.id)
            if row is None:
                # Deleted while this request was in flight: its token is dead now.
                raise Unauthenticated("The account no longer exists.")
            precondition.check(row["version"], row["updated_at"])
            if verified is not None:
                stored, new_hash = verified
                # A concurrent change since we verified wins, not this one.
                if row["password_hash"] != stored:
                    raise Conflict("The password changed meanwhile; try again.")
                await conn.execute(_UPDATE_HASH, caller.id, new_hash)
                await revoke_other_sessions(conn, caller.id, keep=caller.token_hash)
                # A reset link mailed before the change must not undo it.
                await revoke_tokens(conn, caller.id, Purpose.RESET_PASSWORD)
            if body.display_name is not None:
                row = await conn.fetchrow(_UPDATE_NAME, caller.id, body.display_name)
                assert row is not None  # locked above
    finally:
        # Read your own writes on this process at once; PostgreSQL tells the others.
        sessions.forget_user(caller.id)
    response.headers["ETag"] = entity_tag("u", caller.id, row["version"])
    return User(
        id=row["id"],
        email=row["email"],
        display_name=row["display_name"],
        created_at=row["created_at"],
        email_verified=row["email_verified"],
    )


async def _verify_and_hash(
    pool: asyncpg.Pool,
    passwords: Hasher,
    caller: Caller,
    current: str,
    new: str,
    settings: Settings_,
    address: str,
) -> tuple[str, str]:
    """Check ``current`` and hash ``new`` (both off the loop, outside any transaction).

    Returns:
        The stored hash that was verified, and the new hash.
    """
    # Guessing the current password with a stolen token is a login attempt: same throttle.
    throttle = LoginThrottle.for_attempt(settings, mailbox_key(caller.email), address)
    await throttle.check(pool)
    stored = await pool.fetchval("SELECT password_hash FROM users WHERE id = $1", caller.id)
    if stored is None:
        raise Unauthenticated("The account no longer exists.")
    if not await passwords.verify(stored, current):
        await throttle.record_failure(pool)
        raise Forbidden("current_password is wrong.")
    return stored, await passwords.hash(new)
