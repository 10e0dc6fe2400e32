"""``loopwise users ...``: find an account, show its state, disable it, help its owner.

A command line rather than HTTP admin endpoints: whoever runs these already holds the
database's credentials, on a machine operators log in to, so nothing new is exposed to
the internet, there is no admin token to steal, phish or replay, and no cross-site
request can reach it. An HTTP admin surface would need its own strong authentication,
authorisation, audit trail and network isolation to be as safe. Each change is logged
(``operator_action``, with the operating-system user) for the audit trail.
"""

from __future__ import annotations

import getpass
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import asyncpg
import typer

from loopwise.cli.startup import fail, validated_settings, with_connection
from loopwise.service.logs import get_logger

if TYPE_CHECKING:
    from loopwise.service.accounts.operators import UserState

__all__ = ["users_app"]

T = TypeVar("T")

_log = get_logger("loopwise.operators")

users_app = typer.Typer(
    help="Find an account and help its owner: show, disable, enable, end sessions, reset.",
    no_args_is_help=True,
)

_Who = Annotated[str, typer.Argument(help="The account's email (any case) or numeric id.")]


class _NoSuchUser(Exception):
    pass


def _on_user(who: str, work: Callable[[asyncpg.Connection, UserState], Awaitable[T]]) -> T:
    """Find the account ``who`` names, then run ``work`` on it; exit 1 when there is none."""
    from loopwise.service.accounts.operators import find_user

    settings = validated_settings()

    async def run(conn: asyncpg.Connection) -> T:
        state = await find_user(conn, who, settings)
        if state is None:
            raise _NoSuchUser
        return await work(conn, state)

    try:
        return with_connection(settings, run)
    except _NoSuchUser:
        fail(f"no account with email or id {who!r}", status=1)


def _audit(action: str, user_id: int, **details: object) -> None:
    _log.info("operator_action", action=action, user_id=user_id, operator=_operator(), **details)


def _operator() -> str:
    try:
        return getpass.getuser()
    except OSError:  # no user name in the environment or the password database
        return "unknown"


@users_app.command("show")
def users_show(who: _Who) -> None:
    """The account's state: verified, disabled, live sessions, failed logins, pending jobs."""

    import dataclasses

    async def show(_conn: asyncpg.Connection, state: UserState) -> UserState:
        return state

    state = _on_user(who, show)
    for field in dataclasses.fields(state):
        value = getattr(state, field.name)
        if hasattr(value, "isoformat"):
            value = value.isoformat(timespec="seconds")
        typer.echo(f"{field.name:<18} {'-' if value is None else value}")


@users_app.command("disable")
def users_disable(who: _Who) -> None:
    """Disable the account: its sessions end on every instance, it can no longer log in."""
    from loopwise.service.accounts.operators import disable_user

    async def disable(conn: asyncpg.Connection, state: UserState) -> tuple[int, int | None]:
        return state.id, await disable_user(conn, state.id)

    user_id, ended = _on_user(who, disable)
    _audit("disable", user_id, sessions_ended=ended)
    typer.echo(f"disabled account {user_id}; ended {ended} session(s)")


@users_app.command("enable")
def users_enable(who: _Who) -> None:
    """Let a disabled account log in again (its ended sessions stay ended)."""
    from loopwise.service.accounts.operators import enable_user

    async def enable(conn: asyncpg.Connection, state: UserState) -> int:
        await enable_user(conn, state.id)
        return state.id

    user_id = _on_user(who, enable)
    _audit("enable", user_id)
    typer.echo(f"enabled account {user_id}")


@users_app.command("end-sessions")
def users_end_sessions(who: _Who) -> None:
    """End every session of the account on every instance (the owner logs in again)."""
    from loopwise.service.accounts.operators import end_sessions

    async def end(conn: asyncpg.Connection, state: UserState) -> tuple[int, int]:
        return state.id, await end_sessions(conn, state.id)

    user_id, ended = _on_user(who, end)
    _audit("end_sessions", user_id, sessions_ended=ended)
    typer.echo(f"ended {ended} session(s) of account {user_id}")


@users_app.command("send-reset")
def users_send_reset(who: _Who) -> None:
    """Email the account's owner a password reset link (nothing is sent to a disabled one)."""
    from loopwise.service.accounts.operators import send_reset

    settings = validated_settings()

    async def send(conn: asyncpg.Connection, state: UserState) -> tuple[int, int, bool]:
        job_id = await send_reset(conn, state, settings)
        return state.id, job_id, state.disabled_at is not None

    user_id, job_id, disabled = _on_user(who, send)
    _audit("send_reset", user_id, job_id=job_id)
    typer.echo(f"queued reset email job {job_id} for account {user_id}")
    if disabled:
        typer.echo("note: the account is disabled; the worker sends nothing to it", err=True)
