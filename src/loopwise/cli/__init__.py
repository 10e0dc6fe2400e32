"""The ``loopwise`` command.

Each top-level command lives in the module of its concept and is registered here, in the
order ``loopwise --help`` lists them; the ``jobs`` sub-app registers its own commands.
"""

from __future__ import annotations

import typer

from loopwise.cli.jobs import jobs_app, worker
from loopwise.cli.service import migrate, serve
from loopwise.cli.users import users_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="loopwise",
    help="An async account service on PostgreSQL, and the async patterns it is built on.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(serve)
app.command()(migrate)
app.command()(worker)
app.add_typer(jobs_app, name="jobs")
app.add_typer(users_app, name="users")


def main() -> None:
    app()
