"""`rlhf prompts import FILE`: JSONL or CSV, all-or-nothing; `rlhf prompts list`; `rlhf prompts retire ID...`."""

import json
from pathlib import Path

import typer
from sqlalchemy import func, select

from app.cli.errors import fail
from app.cli.id_lists import read_ids
from app.cli.session import cli_session
from app.models import Prompt
from app.services.prompt_import import PromptImportError, import_prompts
from app.services.retirement import retire_prompts

app = typer.Typer(no_args_is_help=True)


@app.command("import")
def import_(
    file: Path = typer.Argument(..., help="JSONL or CSV: `prompt` or `messages`, optional `tags`, `split`."),
    fmt: str = typer.Option(None, "--format", help="jsonl or csv (default: from the file name)."),
    source: str = typer.Option("import", "--source", help="Recorded as each new prompt's source."),
) -> None:
    """Import prompts. Any bad line refuses the whole file (exit 2, file:line: reason); duplicates are skipped."""
    if not file.is_file():
        fail(f"{file}: no such file")
    data = file.read_bytes()
    with cli_session() as db:
        try:
            result = import_prompts(db, data=data, name=str(file), fmt=fmt, source=source)
        except PromptImportError as exc:
            for line in exc.lines()[1:]:
                typer.echo(line, err=True)
            fail(str(exc))
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(
        f"{result.created} prompts created, {result.duplicates} duplicates skipped ({result.lines} lines)", err=True
    )
    typer.echo(json.dumps(result.as_dict()))


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Counts as one JSON object.")) -> None:
    """How many prompts there are, per split."""
    with cli_session() as db:
        counts = {split: n for split, n in db.execute(select(Prompt.split, func.count()).group_by(Prompt.split))}
    if as_json:
        typer.echo(json.dumps(counts, sort_keys=True))
        return
    for split, n in sorted(counts.items()):
        typer.echo(f"{split:<6} {n}")


@app.command("retire")
def retire(
    ids: list[str] = typer.Argument(None, help="Prompt ids.", show_default=False),
    file: Path = typer.Option(None, "--file", help="A file of prompt ids (one or more a line)."),
) -> None:
    """Retire prompts and their tasks: kept for provenance, never shown, trained on or exported again."""
    wanted = read_ids(ids or [], file, "prompt")
    with cli_session() as db:
        result = retire_prompts(db, ids=wanted)
    typer.echo(
        f"{result.retired} prompts retired ({result.already} already were), {result.tasks_retired} tasks with them",
        err=True,
    )
    typer.echo(json.dumps(result.as_dict()))
