"""`deeprig users add|list|grant`: the tracking server's users and their permissions on
experiments, through MLflow's own auth API (as the server's admin). Parsing and printing
only; the work is in deeprig.tracking.auth."""

from __future__ import annotations

import os
import sys

import typer
from rich import box
from rich.table import Table

from deeprig.cli.common import OUTPUT_HELP, ExitCode, console, errors, print_records

users_app = typer.Typer(
    help="The tracking server's users (MLflow basic auth) and what each may do.\n\n"
    "Example: deeprig users add alice, then deeprig users grant alice digits read",
    no_args_is_help=True,
)
TRACKING_HELP = "Tracking server (default: the one `deeprig cluster up` started here)."


def _server(tracking_uri: str | None) -> tuple[str, str]:
    """The server's URI and its admin's password: the local cluster's credentials file,
    else an admin named in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD."""
    from deeprig.tracking.auth import ADMIN_USER, PASSWORD_ENV, USERNAME_ENV, local_server
    from deeprig.tracking.store import deeprig_home

    local = local_server(deeprig_home())
    uri = tracking_uri or (local.uri if local else None)
    if uri is None:
        errors.print("no tracking server: pass --tracking-uri, or `deeprig cluster up` first")
        raise typer.Exit(ExitCode.BAD_INPUT)
    if local is not None and uri.rstrip("/") == local.uri:
        return uri, local.credentials.admin_password
    if os.environ.get(USERNAME_ENV) == ADMIN_USER and os.environ.get(PASSWORD_ENV):
        return uri, os.environ[PASSWORD_ENV]
    errors.print(
        f"no admin credentials for {uri}: set {USERNAME_ENV}={ADMIN_USER} and {PASSWORD_ENV}"
    )
    raise typer.Exit(ExitCode.BAD_INPUT)


@users_app.command("add")
def add(
    name: str = typer.Argument(..., help="The new user's name."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from standard input (scripts)."
    ),
    tracking_uri: str = typer.Option(None, help=TRACKING_HELP),
) -> None:
    """Add a user to the tracking server; they see no experiment until granted one.

    Example: deeprig users add alice   (asks for the password twice)
    """
    from deeprig.tracking.auth import AuthProblem, add_user

    uri, admin = _server(tracking_uri)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt(f"password for {name}", hide_input=True, confirmation_prompt=True)
    try:
        add_user(uri, admin, name, password)
    except AuthProblem as exc:
        errors.print(f"[bold red]not added:[/] {exc}")
        raise typer.Exit(ExitCode.BAD_INPUT) from None
    console.print(f"added [bold]{name}[/] on {uri}; grant them an experiment: deeprig users grant")


@users_app.command("list")
def list_users(
    tracking_uri: str = typer.Option(None, help=TRACKING_HELP),
    output: str = typer.Option("table", "--output", "-o", help=OUTPUT_HELP),
) -> None:
    """List the tracking server's users.

    Example: deeprig users list
    """
    from deeprig.tracking.auth import AuthProblem
    from deeprig.tracking.auth import list_users as users_of

    uri, admin = _server(tracking_uri)
    try:
        records = users_of(uri, admin)
    except AuthProblem as exc:
        errors.print(f"[bold red]cannot list users:[/] {exc}")
        raise typer.Exit(ExitCode.FAILED) from None
    if output != "table":
        print_records(records, ("username", "admin"), output)
        return
    table = Table(title=f"users of {uri}", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("user", no_wrap=True)
    table.add_column("admin")
    for record in records:
        table.add_row(record["username"], "yes" if record["admin"] else "")
    console.print(table)


@users_app.command("grant")
def grant(
    name: str = typer.Argument(..., help="The user."),
    experiment: str = typer.Argument(..., help="The experiment, by name."),
    level: str = typer.Argument(
        ..., help="read (browse), edit (also log runs) or manage (also grant others)."
    ),
    tracking_uri: str = typer.Option(None, help=TRACKING_HELP),
) -> None:
    """Let a user read, edit or manage one experiment.

    Example: deeprig users grant alice digits read
    """
    from deeprig.tracking.auth import PERMISSIONS, AuthProblem
    from deeprig.tracking.auth import grant as grant_permission

    if level not in PERMISSIONS:
        errors.print(f"LEVEL must be one of {', '.join(PERMISSIONS)} (got {level!r})")
        raise typer.Exit(ExitCode.BAD_INPUT)
    uri, admin = _server(tracking_uri)
    try:
        grant_permission(uri, admin, name, experiment, level)
    except AuthProblem as exc:
        errors.print(f"[bold red]not granted:[/] {exc}")
        raise typer.Exit(ExitCode.BAD_INPUT) from None
    console.print(f"[bold]{name}[/] may now {level} experiment [bold]{experiment}[/]")
