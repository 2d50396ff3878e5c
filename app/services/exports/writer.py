"""Writing an export: JSONL (or CSV for `rich`) streamed to a temporary file, renamed when complete, with its
sha256 in a `.sha256` sidecar; for HTTP, the same written under data_dir/exports and described for the response."""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.services.annotator_weights import annotator_weights
from app.services.digests import repr_digest, write_hashed
from app.services.exports.filters import ExportError, ExportFilters, filters_from_strings
from app.services.exports.formats import FORMATS, TRL_FORMATS, jsonl_line
from app.services.exports.lines import iter_lines

CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class ExportResult:
    format: str
    path: Path
    rows: int
    sha256: str
    annotations: int
    filters: dict[str, Any]
    include_ties: bool
    csv: bool
    annotators: set[int] = field(default_factory=set, repr=False)
    sources: dict[str, int] = field(default_factory=dict)
    max_annotation_id: int | None = None


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        value = json.dumps(value, ensure_ascii=False)
    if isinstance(value, str) and value.startswith(CSV_FORMULA_START):
        return "'" + value  # a spreadsheet shows the text instead of running it as a formula
    return value


def _csv_chunks(batches: Iterator[list[dict[str, Any]]]) -> Iterator[tuple[str, int]]:
    buffer = io.StringIO()
    writer = None
    for lines in batches:
        for line in lines:
            if writer is None:
                writer = csv.writer(buffer, lineterminator="\n")
                writer.writerow(list(line))
            writer.writerow([_csv_cell(v) for v in line.values()])
        yield buffer.getvalue(), len(lines)
        buffer.seek(0)
        buffer.truncate()


def _jsonl_chunks(batches: Iterator[list[Any]]) -> Iterator[tuple[str, int]]:
    for lines in batches:
        yield "".join(line if isinstance(line, str) else jsonl_line(line) for line in lines), len(lines)


def default_filename(fmt: str, as_csv: bool = False) -> str:
    return f"{fmt}.{'csv' if as_csv else 'jsonl'}"


def sidecar(path: Path) -> Path:
    """Where the sha256 of `path` is written."""
    return path.with_name(path.name + ".sha256")


def write_export(
    session: Session,
    *,
    fmt: str,
    out: Path,
    filters: ExportFilters = ExportFilters(),
    include_ties: bool = False,
    as_csv: bool = False,
    refuse_empty: bool = False,
    rewrites: str = "include",
    weight_of: Callable[[int], float] | None = None,
) -> ExportResult:
    """Write the export to `out` (via a temporary file, renamed when complete) and `out.sha256`. With
    `refuse_empty`, an export without rows raises ExportError (404) saying why and writes nothing: an empty
    file only fails later, in `datasets`. (A round's snapshot may hold empty files: it passes False.) `weight_of`:
    lines.iter_export."""
    if as_csv and fmt != "rich":
        raise ExportError("CSV is offered for the rich format only (the others are JSONL for datasets/TRL)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = ExportResult(
        format=fmt,
        path=out,
        rows=0,
        sha256="",
        annotations=0,
        filters=filters.describe(),
        include_ties=include_ties,
        csv=as_csv,
    )
    batches = iter_lines(
        session,
        fmt=fmt,
        filters=filters,
        include_ties=include_ties,
        stats=result,
        encoded=not as_csv,
        rewrites=rewrites,
        weight_of=weight_of,
    )

    def encoded() -> Iterator[bytes]:
        for chunk, n in _csv_chunks(batches) if as_csv else _jsonl_chunks(batches):
            result.rows += n
            yield chunk.encode("utf-8")

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        result.sha256 = write_hashed(tmp, encoded())
        if refuse_empty and result.rows == 0:
            raise ExportError(nothing_to_export(result), status=404)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    sidecar(out).write_text(f"{result.sha256}  {out.name}\n")
    return result


def nothing_to_export(result: ExportResult) -> str:
    """Why an export has no rows, naming the filters that were set."""
    # the defaults ("all" sources, "raw" labels) are no filter
    chosen = {k: v for k, v in result.filters.items() if v not in (None, [], (), "all") and (k, v) != ("labels", "raw")}
    which = ", ".join(f"{k}={v}" for k, v in sorted(chosen.items())) or "no filters"
    why = f"no annotation matches ({which}) or makes a {result.format} row"
    if result.format in TRL_FORMATS and not result.include_ties:
        why += "; ties and both-bad answers are left out unless include_ties is set"
    return f"empty {result.format} export: {why}. Nothing was written."


def write_weighted_export(
    session: Session,
    *,
    fmt: str,
    out: Path,
    filters: ExportFilters,
    include_ties: bool = False,
    as_csv: bool = False,
    annotator_weighting: str = "none",
) -> ExportResult:
    """An export as a person asks for it (the CLI, the API): refused when empty, and with `annotator_weighting`
    other than none each line carries its annotator's weight (`weight`), as a round's snapshot does."""
    weights = annotator_weights(
        session, annotator_weighting, source=filters.source, since=filters.since, until_id=filters.until_id
    )
    return write_export(
        session,
        fmt=fmt,
        out=out,
        filters=filters,
        include_ties=include_ties,
        as_csv=as_csv,
        refuse_empty=True,
        weight_of=weights.of if weights is not None else None,
    )


def export_to_data_dir(
    *,
    data_dir: Path,
    fmt: str,
    filters: ExportFilters,
    include_ties: bool = False,
    as_csv: bool = False,
    annotator_weighting: str = "none",
) -> ExportResult:
    """For HTTP: the export is written to a file under data_dir/exports first (a read-only session), then served.
    `annotator_weighting` other than none adds each line's annotator weight (`weight`), as a round's snapshot does."""
    from app.db import get_read_sessionmaker

    out = Path(data_dir) / "exports" / f"{uuid.uuid4().hex}-{default_filename(fmt, as_csv)}"
    session = get_read_sessionmaker()()
    try:
        return write_weighted_export(
            session,
            fmt=fmt,
            out=out,
            filters=filters,
            include_ties=include_ties,
            as_csv=as_csv,
            annotator_weighting=annotator_weighting,
        )
    finally:
        session.close()


@dataclass(frozen=True)
class ExportDownload:
    """A written export as an HTTP response serves it; `remove` deletes the file once it has been sent."""

    path: Path
    filename: str
    media_type: str
    headers: dict[str, str]

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        sidecar(self.path).unlink(missing_ok=True)


def export_download(
    *,
    data_dir: Path,
    fmt: str,
    since: str | None = None,
    until: str | None = None,
    until_id: int | str | None = None,
    source: str | None = None,
    annotators: list[str] | None = None,
    split: str | None = None,
    min_agreement: float | str | None = None,
    include_ties: bool = False,
    as_csv: bool = False,
    annotator_weighting: str | None = None,
    labels: str | None = None,
) -> ExportDownload:
    """The export the API and the admin page serve: written under data_dir/exports, with its sha256
    (`Repr-Digest`) and row count (`X-Row-Count`). An unknown format is a 404 (it is the resource asked for)."""
    if fmt not in FORMATS:
        raise ExportError(f"no export format {fmt!r}; formats: {', '.join(FORMATS)}", status=404)
    filters = filters_from_strings(
        since=since,
        until=until,
        until_id=until_id,
        source=source,
        annotators=annotators,
        split=split,
        min_agreement=min_agreement,
        labels=labels,
    )
    result = export_to_data_dir(
        data_dir=data_dir,
        fmt=fmt,
        filters=filters,
        include_ties=include_ties,
        as_csv=as_csv,
        annotator_weighting=annotator_weighting or "none",
    )
    return ExportDownload(
        path=result.path,
        filename=default_filename(fmt, as_csv),
        media_type="text/csv; charset=utf-8" if as_csv else "application/jsonl; charset=utf-8",
        headers={"Repr-Digest": repr_digest(result.sha256), "X-Row-Count": str(result.rows)},
    )
