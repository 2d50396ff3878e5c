"""`rlhf annotations import FILE --format trl|kto|rankings --source human|ai --annotator NAME`.

(Not named annotations.py: `from __future__ import annotations` in app/cli/__init__.py shadows that name.)
"""

import json
from pathlib import Path

import typer

from app.cli.errors import fail
from app.cli.session import cli_session
from app.services.annotation_import import FORMATS, AnnotationImportError, import_annotations
from domain.vocabulary import SOURCES

app = typer.Typer(no_args_is_help=True)


@app.command("import")
def import_(
    file: Path = typer.Argument(..., help="A JSONL file in one of our export formats."),
    fmt: str = typer.Option(..., "--format", help=f"One of {', '.join(FORMATS)}."),
    source: str = typer.Option(..., "--source", help=f"{' or '.join(SOURCES)}."),
    annotator: str = typer.Option(
        ..., "--annotator", help="Annotator name the annotations are recorded under (created if new)."
    ),
) -> None:
    """Import annotations made elsewhere, so they train together with ours. All or nothing."""
    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if source not in SOURCES:
        fail(f"--source must be {' or '.join(SOURCES)}, not {source!r}")
    if not file.is_file():
        fail(f"{file}: no such file")
    data = file.read_bytes()
    with cli_session() as db:
        try:
            result = import_annotations(db, data=data, name=str(file), fmt=fmt, source=source, annotator=annotator)
        except AnnotationImportError as exc:
            for line in exc.lines()[1:]:
                typer.echo(line, err=True)
            fail(str(exc))
    typer.echo(f"imported {result.annotations} annotations ({result.prompts_created} new prompts)", err=True)
    typer.echo(json.dumps(result.as_dict()))
