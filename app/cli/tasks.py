"""`rlhf tasks import FILE`: bring-your-own-generation tasks from JSONL, all or nothing; `rlhf tasks retire ID...`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from app.cli.errors import fail
from app.cli.id_lists import read_ids
from app.cli.session import cli_session
from app.services.retirement import retire_tasks
from app.services.tasks import TaskImportError, import_tasks
from app.settings import get_settings

app = typer.Typer(no_args_is_help=True)


@app.command("import")
def import_(file: Path = typer.Argument(..., help="JSONL: one task a line (see `rlhf tasks import --help`).")) -> None:
    """Import tasks: {"prompt" | "messages", "responses", "kind", "overlap", "priority", "meta"} per line.
    Any bad line: nothing is stored, exit 2 naming FILE:LINE and the reason."""
    settings = get_settings()
    if not file.is_file():
        fail(f"{file}: no such file")
    if file.stat().st_size > settings.max_upload_bytes:
        fail(f"{file}: larger than the {settings.max_upload_bytes} byte upload limit")
    with file.open("rb") as fh:
        lines = fh.read().splitlines()
    with cli_session() as db:
        try:
            result = import_tasks(db, lines=lines, max_text_bytes=settings.max_text_bytes)
        except TaskImportError as exc:
            db.rollback()
            shown = "; ".join(f"{file}:{n}: {reason}" for n, reason in exc.errors[:5])
            more = f" (and {len(exc.errors) - 5} more bad lines)" if len(exc.errors) > 5 else ""
            fail(f"nothing imported: {shown}{more}")
    for warning in result.warnings:
        typer.echo(f"warning: {file}: {warning}", err=True)
    typer.echo(
        f"imported {len(result.task_ids)} task(s) from {file} "
        f"({result.prompts_created} new prompt(s)); task ids {result.task_ids[0]}..{result.task_ids[-1]}"
    )


@app.command("retire")
def retire(
    ids: list[str] = typer.Argument(None, help="Task ids.", show_default=False),
    file: Path = typer.Option(None, "--file", help="A file of task ids (one or more a line)."),
) -> None:
    """Retire tasks: kept for provenance, never offered, trained on or exported again."""
    wanted = read_ids(ids or [], file, "task")
    with cli_session() as db:
        result = retire_tasks(db, ids=wanted)
    typer.echo(f"{result.retired} tasks retired ({result.already} already were)", err=True)
    typer.echo(json.dumps(result.as_dict()))
