import typer

from app.cli.errors import fail
from app.db import DatabaseUnreachable, check_connection, get_engine
from app.settings import get_settings

app = typer.Typer(no_args_is_help=True)


@app.command("upgrade")
def upgrade(revision: str = typer.Argument("head", help="Alembic revision to upgrade to.")) -> None:
    """Create or upgrade the schema (Alembic `upgrade head`)."""
    try:
        check_connection(get_engine())
    except DatabaseUnreachable as exc:
        fail(str(exc))
    from app.migrations_runner import upgrade as alembic_upgrade  # alembic is heavy to import: only here

    alembic_upgrade(get_settings().sqlalchemy_url, revision)
    typer.echo(f"database at revision {revision}", err=True)
