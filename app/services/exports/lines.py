"""The export as batches of lines: the format's query read through a server-side cursor in batches (annotation id
order), the generation texts of each batch fetched at once, each row through its format's builder. The lines of
one annotation come in a fixed order, so the same database and filters give the same lines; memory stays constant
whatever the size."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from app.services.exports.filters import ExportError, ExportFilters
from app.services.exports.formats import (
    FORMATS,
    REWRITE_OPTIONS,
    TRL_FORMATS,
    DirectPairs,
    jsonl_line,
    kto_lines,
    rankings_lines,
    rich_line,
    sft_lines,
    trl_lines,
)
from app.services.exports.query import (
    JSON,
    adjudication_query,
    annotation_query,
    decode,
    generation_info,
    needed_generations,
    passing_tasks,
)

if TYPE_CHECKING:
    from app.services.exports.writer import ExportResult

BATCH = 2000
# Formats whose lines are preference data: with annotator weights asked for, each line carries its `weight`.
WEIGHTED_FORMATS = ("trl", "trl-conversational", "rankings", "kto", "rich")


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def iter_export(
    session: Session,
    *,
    fmt: str,
    filters: ExportFilters = ExportFilters(),
    include_ties: bool = False,
    stats: ExportResult | None = None,
    rewrites: str = "include",
    weight_of: Callable[[int], float] | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Batches of export lines (dicts) in the export's order. Updates `stats` (counts, annotators) if given.
    `rewrites` (trl formats): include a rewrite's pairs, exclude them, or give only them. `weight_of` (annotator's
    user id -> weight) adds a `weight` key to each line of the preference formats (WEIGHTED_FORMATS); without it
    the formats are unchanged."""
    return iter_lines(
        session,
        fmt=fmt,
        filters=filters,
        include_ties=include_ties,
        stats=stats,
        encoded=False,
        rewrites=rewrites,
        weight_of=weight_of,
    )


def iter_lines(
    session: Session,
    *,
    fmt: str,
    filters: ExportFilters,
    include_ties: bool,
    stats: ExportResult | None,
    encoded: bool,
    rewrites: str = "include",
    weight_of: Callable[[int], float] | None = None,
) -> Iterator[list[Any]]:
    """`iter_export`; with `encoded`, the `trl` hot path gives each line as its JSONL text (`jsonl_line`)."""
    check_format(fmt)
    if rewrites not in REWRITE_OPTIONS:
        raise ExportError(f"rewrites must be one of {', '.join(REWRITE_OPTIONS)}, not {rewrites!r}")
    if fmt not in WEIGHTED_FORMATS:
        weight_of = None
    passing = passing_tasks(session, filters)
    rich = fmt == "rich"
    trl = fmt in TRL_FORMATS
    conversational = fmt == "trl-conversational"
    # The annotations; with labels=adjudicated then the final labels that stand in for the human annotations left
    # out (not held to the agreement filter: the reviewer settled the task). A final label goes the general way.
    queries = [(annotation_query(session, fmt, filters, rewrites=rewrites), passing, trl)]
    if filters.labels == "adjudicated":
        queries.append((adjudication_query(session, fmt, filters, rewrites=rewrites), None, False))
    # A Core result on the session's connection (no ORM row processing); a server-side cursor on PostgreSQL.
    connection = session.connection()
    for query, admitted_tasks, fast in queries:
        result = connection.execute(query.execution_options(stream_results=True, yield_per=BATCH))
        yield from _batches(
            session,
            result,
            fmt=fmt,
            rich=rich,
            trl=trl,
            conversational=conversational,
            fast=fast,
            passing=admitted_tasks,
            include_ties=include_ties,
            stats=stats,
            encoded=encoded,
            rewrites=rewrites,
            weight_of=weight_of,
        )


def _batches(
    session: Session,
    result,
    *,
    fmt: str,
    rich: bool,
    trl: bool,
    conversational: bool,
    fast: bool,
    passing: set[int] | None,
    include_ties: bool,
    stats: ExportResult | None,
    encoded: bool,
    rewrites: str,
    weight_of: Callable[[int], float] | None,
) -> Iterator[list[Any]]:
    """One query's rows as batches of lines; `fast`: a trl pairwise choice with its texts joined takes DirectPairs."""
    names = tuple(result.keys())
    json_names = tuple(n for n in names if n in JSON)
    task_col = names.index("task_id")
    direct = DirectPairs(names, conversational=conversational, include_ties=include_ties) if fast else None
    for raw_batch in result.partitions():
        if passing is not None:
            raw_batch = [r for r in raw_batch if r[task_col] in passing]
        # The common trl case (a pairwise choice, both texts joined in SQL) stays a tuple; the rest become dicts.
        batch = [
            r if direct is not None and direct.matches(r) else decode(dict(zip(names, r)), json_names)
            for r in raw_batch
        ]
        needed: set[int] = set()
        for r in batch:
            if isinstance(r, dict):
                needed_generations(r, needed)
        info = generation_info(session, needed, rich=rich)
        texts = info if not rich else {g: v[1] for g, v in info.items()}
        lines: list[Any] = []
        direct_rows = []
        for r in batch:
            before = len(lines)
            if not isinstance(r, dict):
                if weight_of is None:
                    line = direct.encoded_line(r) if encoded else direct.line(r)
                else:  # the weighted line is built as a dict: the fast text has no slot for it
                    line = direct.line(r)
                    if line is not None:
                        line["weight"] = round(weight_of(r[direct.user]), 6)
                        line = jsonl_line(line) if encoded else line
                if line is not None:
                    lines.append(line)
                    direct_rows.append(r)
                continue
            if trl:
                lines.extend(
                    trl_lines(r, texts, conversational=conversational, include_ties=include_ties, rewrites=rewrites)
                )
            elif fmt == "kto":
                lines.extend(kto_lines(r, texts))
            elif fmt == "rankings":
                lines.extend(rankings_lines(r, texts))
            elif fmt == "sft":
                lines.extend(sft_lines(r, texts))
            else:
                lines.append(rich_line(r, info))
            if weight_of is not None and len(lines) > before:
                weight = round(weight_of(r["user_id"]), 6)
                for line in lines[before:]:
                    line["weight"] = weight
            if stats is not None and len(lines) > before:
                stats.annotations += 1
                stats.annotators.add(r["user_id"])
                stats.sources[r["source"]] = stats.sources.get(r["source"], 0) + 1
                stats.max_annotation_id = max(r["id"], stats.max_annotation_id or 0)
        if stats is not None and direct_rows:
            direct.count(direct_rows, stats)
        if lines:
            yield lines
