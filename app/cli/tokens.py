import typer

from app.cli.session import cli_session
from app.services.users import create_token, require_user, revoke_token

app = typer.Typer(no_args_is_help=True)


@app.command("create")
def create(
    username: str = typer.Option(..., "--username", help="The token acts as this user."),
    name: str = typer.Option("", "--name", help="A label to recognise the token by."),
) -> None:
    """Create an API token and print it on stdout (only the token). It is shown once; only its hash is kept."""
    with cli_session() as db:
        row, token = create_token(db, user=require_user(db, username=username), name=name)
    typer.echo(f"token id {row.id} for {username}", err=True)
    typer.echo(token)


@app.command("revoke")
def revoke(
    token_id: int = typer.Argument(..., help="The token's id (printed at creation, listed in the users page)."),
) -> None:
    """Revoke an API token: requests with it get 401 from now on."""
    with cli_session() as db:
        revoke_token(db, token_id=token_id)
    typer.echo(f"revoked token {token_id}", err=True)
