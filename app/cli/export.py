"""`rlhf export --format F [--out FILE] [filters]`: writes FILE and FILE.sha256, prints rows and sha256."""

from pathlib import Path

import typer

from app.cli.errors import fail
from app.cli.session import cli_session
from app.db import get_read_sessionmaker
from app.services.annotator_weights import WeightingError
from app.services.exports import (
    FORMATS,
    ExportError,
    ExportFilters,
    default_filename,
    parse_time,
    write_card,
    write_weighted_export,
)
from domain.vocabulary import ANNOTATOR_WEIGHTINGS, LABEL_SETS, SOURCES, SPLITS


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    fmt: str = typer.Option(..., "--format", help=f"One of {', '.join(FORMATS)}."),
    out: Path = typer.Option(None, "--out", help="Output file (default: ./FORMAT.jsonl, or .csv with --csv)."),
    include_ties: bool = typer.Option(False, "--include-ties", help="trl formats: keep ties and both-bad, add `tie`."),
    since: str = typer.Option(None, "--since", help="Annotations created at or after (ISO 8601, UTC if no zone)."),
    until: str = typer.Option(None, "--until", help="Annotations created before (ISO 8601)."),
    until_id: int = typer.Option(None, "--until-id", help="Annotations with id <= this."),
    source: str = typer.Option("all", "--source", help=f"{', '.join(SOURCES)} or all."),
    annotators: list[str] = typer.Option(
        None, "--annotator", help="Only these annotators (username or pseudonymous id); repeatable."
    ),
    split: str = typer.Option(None, "--split", help=f"Only prompts of this split ({' or '.join(SPLITS)})."),
    min_agreement: float = typer.Option(
        None, "--min-agreement", help="Only overlapped tasks with agreement >= this (0..1)."
    ),
    as_csv: bool = typer.Option(False, "--csv", help="rich format as CSV (formula injection neutralised)."),
    card: bool = typer.Option(False, "--card", help="Also write a dataset card README.md beside the file."),
    annotator_weighting: str = typer.Option(
        "none",
        "--annotator-weighting",
        help=f"{' | '.join(ANNOTATOR_WEIGHTINGS)}: other than none, each preference line gets its annotator's weight.",
    ),
    labels: str = typer.Option(
        "raw",
        "--labels",
        help=f"{' | '.join(LABEL_SETS)}: adjudicated gives a task's reviewer's final label in place of its human "
        "annotations (rich marks it).",
    ),
) -> None:
    """Export annotations in a format TRL and `datasets` load unchanged (deterministic, streamed)."""
    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    try:
        filters = ExportFilters.checked(
            since=parse_time(since, name="--since"),
            until=parse_time(until, name="--until"),
            until_id=until_id,
            source=source,
            annotators=tuple(annotators or ()),
            split=split,
            min_agreement=min_agreement,
            labels=labels,
        )
    except ExportError as exc:
        fail(str(exc))
    out = out or Path(default_filename(fmt, as_csv))
    with cli_session():  # checks the database is reachable and migrated
        pass
    session = get_read_sessionmaker()()
    try:
        result = write_weighted_export(
            session,
            fmt=fmt,
            out=out,
            filters=filters,
            include_ties=include_ties,
            as_csv=as_csv,
            annotator_weighting=annotator_weighting,
        )
        if card:
            card_path = write_card(session, result=result)
            typer.echo(f"card: {card_path}", err=True)
    except (ExportError, WeightingError) as exc:
        fail(str(exc))
    finally:
        session.close()
    typer.echo(f"rows: {result.rows}", err=True)
    typer.echo(f"sha256: {result.sha256}", err=True)
    typer.echo(f"wrote {out} and {out}.sha256", err=True)
