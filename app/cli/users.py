import json
import sys

import typer

from app.cli.errors import fail
from app.cli.session import cli_session
from app.services.users import create_user, list_users, require_user, set_active, set_password
from domain.vocabulary import ROLES

app = typer.Typer(no_args_is_help=True)


@app.command("create")
def create(
    username: str = typer.Option(..., "--username", help="Login name."),
    role: str = typer.Option("annotator", "--role", help=f"{', '.join(ROLES)} (a reviewer works the review queue)."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input."),
) -> None:
    """Create a user. The password is read from stdin (never from an argument, so it stays out of shell history)."""
    if role not in ROLES:
        fail(f"--role must be one of {', '.join(ROLES)}, not {role!r}")
    if not password_stdin:
        fail("pass --password-stdin and the password on standard input")
    password = sys.stdin.readline().rstrip("\r\n")
    with cli_session() as db:
        user = create_user(db, username=username, role=role, password=password)
        typer.echo(f"created {user.role} {user.username} (id {user.id})", err=True)


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="One JSON array.")) -> None:
    """List users."""
    with cli_session() as db:
        rows = [
            {
                "id": u.id,
                "username": u.username,
                "role": u.role,
                "active": u.is_active,
                "ai": u.is_ai,
                "created_at": u.created_at.isoformat(),
            }
            for u in list_users(db)
        ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        typer.echo(f"{r['id']:>5}  {r['username']:<24} {r['role']:<10} {'active' if r['active'] else 'inactive'}")


@app.command("deactivate")
def deactivate(username: str = typer.Argument(..., help="The user to deactivate.")) -> None:
    """Deactivate a user: they can no longer log in, and their API tokens stop working."""
    with cli_session() as db:
        set_active(db, user=require_user(db, username=username), active=False)
    typer.echo(f"deactivated {username}", err=True)


@app.command("password")
def password(
    username: str = typer.Argument(..., help="The user whose password to set."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the new password from standard input."),
) -> None:
    """Set a user's password (read from stdin)."""
    if not password_stdin:
        fail("pass --password-stdin and the new password on standard input")
    new = sys.stdin.readline().rstrip("\r\n")
    with cli_session() as db:
        set_password(db, user=require_user(db, username=username), password=new)
    typer.echo(f"password of {username} set", err=True)
