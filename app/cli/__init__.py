"""`rlhf` command line. One module per command group; each registers itself on `app` below.

Bad arguments exit 2 with a one-line reason (typer/click usage errors also exit 2).
"""

from __future__ import annotations

import os

import typer
from pydantic import ValidationError

from app.cli import annotation_import as annotations_cli
from app.cli import db, demo, jobs, serve, simulate, tokens, users, worker
from app.cli import export as export_cli
from app.cli import generate as generate_cli
from app.cli import models as models_cli
from app.cli import prompts as prompts_cli
from app.cli import round as round_cli
from app.cli import tasks as tasks_cli
from app.settings import PRIVATE_UMASK, Settings

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="rlhf-studio: the whole RLHF loop. See README.md.",
)
app.add_typer(db.app, name="db", help="Database schema (Alembic).")
app.add_typer(users.app, name="users", help="Create, list and deactivate users.")
app.add_typer(tokens.app, name="tokens", help="API bearer tokens.")
app.add_typer(prompts_cli.app, name="prompts", help="Import and count prompts.")
app.add_typer(models_cli.app, name="models", help="Register, list, promote and roll back models.")
app.add_typer(annotations_cli.app, name="annotations", help="Import annotations labelled elsewhere.")
app.add_typer(tasks_cli.app, name="tasks", help="Import tasks (bring your own generations).")
serve.register(app)
export_cli.register(app)
generate_cli.register(app)
app.add_typer(jobs.app, name="jobs", help="List, show and cancel jobs.")
worker.register(app)
simulate.register(app)
demo.register(app)
app.add_typer(round_cli.app, name="round", help="Start training rounds and set their schedule.")
round_cli.register_label_ai(app)


def main() -> None:
    os.umask(PRIVATE_UMASK)
    try:
        app()
    except ValidationError as exc:
        if exc.title != Settings.__name__:
            raise
        # a bad RLHF_ setting: one line naming it, as for a bad argument
        first = exc.errors()[0]
        typer.echo(f"error: RLHF_{str(first['loc'][0]).upper()}: {first['msg']}", err=True)
        raise SystemExit(2) from None
