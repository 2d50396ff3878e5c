"""Exports: flat JSONL (or CSV for `rich`) that loads in `datasets` and TRL unchanged.

Formats (every line of a format has the same keys with the same types, so `datasets` builds one table):
    trl                 prompt, chosen, rejected (strings), margin (float), annotation_id [, tie (bool)]
    trl-conversational  the same with prompt a messages list and chosen/rejected [{"role": "assistant", ...}]
    kto                 prompt, completion, label (bool: good is true), annotation_id
    rankings            prompt, completions (best first), annotation_id
    sft                 prompt, completion, source ("rewrite" | "good"), annotation_id
    rich                one line per annotation with everything (see `_rich_row`); also CSV

Where the pairs come from (`trl`): a pairwise choice gives (chosen, the other response); a ranking of K gives
all K(K-1)/2 pairs, best-first order (InstructGPT). Ties and both-bad are left out unless `include_ties`, which
adds a bool `tie` on every line; a tie line lists the two responses in generation-id order.

Margin from strength (TRL's `margin` column: the reward gap the loss asks for, -log σ(r_c - r_r - margin)),
following Llama 2's margin scale: strength 1 "slightly better" -> 1/3, 2 "clearly better" -> 2/3, 3 "much
better" -> 1.0; a choice with no strength, a ranking pair and a tie -> 0.0. An imported line keeps the margin
it came with.

Order and determinism: annotations in id order (ORDER BY annotations.id, read through a server-side cursor in
batches, generation texts fetched per batch), the lines of one annotation in a fixed order; the same database and
filters give the same bytes. Memory stays constant whatever the size.

Filters: since (created_at >= since), until (created_at < until), until_id (annotation id <= until_id), source
human|ai|all, annotators (usernames or pseudonymous ids), split (the prompt's), min_agreement (only tasks with
at least two annotations whose agreement, see agreement.py, is >= the value).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Text, cast, select
from sqlalchemy.orm import Session, aliased

from app.models import Annotation, Generation, ModelVersion, Prompt, Task, TaskPosition, User
from app.services.errors import ServiceError

FORMATS = ("trl", "trl-conversational", "kto", "rankings", "sft", "rich")
SOURCE_FILTERS = ("human", "ai", "all")
MARGIN_BY_STRENGTH = {1: 1 / 3, 2: 2 / 3, 3: 1.0}
BATCH = 2000
CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Which annotation kinds can give lines of each format (the rest are never read).
KINDS_FOR = {
    "trl": ("pairwise", "ranking"),
    "trl-conversational": ("pairwise", "ranking"),
    "rankings": ("ranking",),
    "kto": None,
    "sft": None,
    "rich": None,
}


class ExportError(ServiceError):
    """Bad export arguments; the message is safe to show."""


@dataclass(frozen=True)
class ExportFilters:
    since: datetime | None = None
    until: datetime | None = None
    until_id: int | None = None
    source: str = "all"
    annotators: tuple[str, ...] = ()
    split: str | None = None
    min_agreement: float | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCE_FILTERS:
            raise ExportError(f"source must be one of {', '.join(SOURCE_FILTERS)}, not {self.source!r}")
        if self.split not in (None, "train", "eval"):
            raise ExportError(f"split must be train or eval, not {self.split!r}")
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 1:
            raise ExportError("min agreement must be between 0 and 1")

    def describe(self) -> dict[str, Any]:
        out = asdict(self)
        out["annotators"] = list(self.annotators)
        for key in ("since", "until"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        return out


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


def margin_for(strength: int | None) -> float:
    return MARGIN_BY_STRENGTH.get(strength, 0.0) if strength is not None else 0.0


def parse_time(value: str | None, *, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ExportError(f"{name} must be an ISO 8601 date or time, not {value!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# ---- the query ----------------------------------------------------------------------------------------------

_PLAIN = {
    "id": Annotation.id,
    "task_id": Annotation.task_id,
    "kind": Annotation.kind,
    "source": Annotation.source,
    "choice": Annotation.choice,
    "chosen_id": Annotation.chosen_id,
    "strength": Annotation.strength,
    "critique": Annotation.critique,
    "rewrite": Annotation.rewrite,
    "time_spent_ms": Annotation.time_spent_ms,
    "created_at": Annotation.created_at,
    "user_id": Annotation.user_id,
    "annotator": User.public_id,
    "prompt_id": Prompt.id,
    "prompt_text": Prompt.text,
    "split": Prompt.split,
}
_JSON = {
    "positions": Annotation.positions,
    "ranking": Annotation.ranking,
    "ratings": Annotation.ratings,
    "critiques": Annotation.critiques,
    "flags": Annotation.flags,
    "meta": Annotation.meta,
    "prompt_messages": Prompt.messages,
}
# What each format reads. JSON columns come as text and are parsed here only when a format needs them: decoding
# every JSON column of every row would cost more than the whole export.
_NEEDS = {
    "trl": (
        "id",
        "task_id",
        "kind",
        "source",
        "choice",
        "chosen_id",
        "strength",
        "user_id",
        "prompt_text",
        "positions",
        "ranking",
        "meta",
        "prompt_messages",
    ),
    "kto": ("id", "task_id", "kind", "source", "user_id", "prompt_text", "ratings", "prompt_messages"),
    "rankings": ("id", "task_id", "kind", "source", "user_id", "prompt_text", "ranking", "prompt_messages"),
    "sft": ("id", "task_id", "kind", "source", "user_id", "prompt_text", "rewrite", "ratings", "prompt_messages"),
    "rich": (*_PLAIN, *_JSON),
}
_NEEDS["trl-conversational"] = _NEEDS["trl"]


def _columns(fmt: str) -> list:
    return [_PLAIN[name].label(name) if name in _PLAIN else cast(_JSON[name], Text).label(name) for name in _NEEDS[fmt]]


def _decode(row: dict[str, Any], json_names: tuple[str, ...]) -> dict[str, Any]:
    for name in json_names:
        raw = row[name]
        if raw is None or raw == "null":
            row[name] = None
        elif raw == "{}":
            row[name] = {}
        else:
            row[name] = json.loads(raw)
    return row


def _join_pair_texts(stmt):
    """For `trl`: a pairwise choice's two texts straight from the database (the rejected one is the task's other
    position), so the common case needs no per-batch lookup and no JSON decoding. Other rows get NULLs."""
    chosen, other = aliased(Generation), aliased(Generation)
    position = aliased(TaskPosition)
    direct = (Annotation.kind == "pairwise") & (Annotation.choice == "chosen")
    return (
        stmt.add_columns(chosen.text.label("chosen_text"), other.text.label("rejected_text"))
        .outerjoin(chosen, (chosen.id == Annotation.chosen_id) & direct)
        .outerjoin(
            position,
            (position.task_id == Annotation.task_id) & direct & (position.generation_id != Annotation.chosen_id),
        )
        .outerjoin(other, other.id == position.generation_id)
    )


def _annotation_query(session: Session, fmt: str, filters: ExportFilters):
    stmt = (
        select(*_columns(fmt))
        .join(Task, Task.id == Annotation.task_id)
        .join(Prompt, Prompt.id == Task.prompt_id)
        .join(User, User.id == Annotation.user_id)
        .where(Annotation.deleted_at.is_(None))
    )
    if fmt in ("trl", "trl-conversational"):
        stmt = _join_pair_texts(stmt)
    kinds = KINDS_FOR[fmt]
    if kinds is not None:
        stmt = stmt.where(Annotation.kind.in_(kinds))
    if filters.since is not None:
        stmt = stmt.where(Annotation.created_at >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(Annotation.created_at < filters.until)
    if filters.until_id is not None:
        stmt = stmt.where(Annotation.id <= filters.until_id)
    if filters.source != "all":
        stmt = stmt.where(Annotation.source == filters.source)
    if filters.split is not None:
        stmt = stmt.where(Prompt.split == filters.split)
    if filters.annotators:
        ids = list(
            session.scalars(
                select(User.id).where(User.username.in_(filters.annotators) | User.public_id.in_(filters.annotators))
            )
        )
        stmt = stmt.where(Annotation.user_id.in_(ids or [-1]))
    return stmt.order_by(Annotation.id)


def _generation_info(session: Session, ids: set[int], *, rich: bool) -> dict[int, Any]:
    if not ids:
        return {}
    if not rich:
        return dict(
            session.connection()
            .execute(select(Generation.id, Generation.text).where(Generation.id.in_(sorted(ids))))
            .all()
        )
    rows = session.connection().execute(
        select(
            Generation.id,
            Generation.text,
            Generation.model_version_id,
            ModelVersion.name,
            Generation.temperature,
            Generation.top_k,
            Generation.top_p,
            Generation.max_new_tokens,
            Generation.seed,
            Generation.source,
        )
        .outerjoin(ModelVersion, ModelVersion.id == Generation.model_version_id)
        .where(Generation.id.in_(sorted(ids)))
    )
    return {r[0]: r for r in rows}


def _needed_generations(row: dict[str, Any], ids: set[int]) -> None:
    ids.update(row.get("positions") or ())
    if row.get("chosen_id") is not None:
        ids.add(row["chosen_id"])
    ids.update(row.get("ranking") or ())
    ids.update(int(g) for g in (row.get("ratings") or ()))


def _passing_tasks(session: Session, filters: ExportFilters) -> set[int] | None:
    if filters.min_agreement is None:
        return None
    from app.services.stats import task_agreements  # stats imports nothing from here; local keeps the graph flat

    agreements = task_agreements(session, source=filters.source)
    return {task_id for task_id, value in agreements.items() if value is not None and value >= filters.min_agreement}


# ---- rows per format -----------------------------------------------------------------------------------------


def _prompt_string(row) -> str:
    if row["prompt_messages"] is None:
        return row["prompt_text"] or ""
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in row["prompt_messages"])


def _prompt_messages(row) -> list[dict[str, str]]:
    if row["prompt_messages"] is None:
        return [{"role": "user", "content": row["prompt_text"] or ""}]
    return [{"role": m["role"], "content": m["content"]} for m in row["prompt_messages"]]


def _pairs(row, include_ties: bool) -> Iterator[tuple[int, int, float, bool]]:
    """(better id, worse id, margin, tie) in a fixed order."""
    if row["kind"] == "pairwise":
        shown = list(row["positions"] or [])
        if row["choice"] == "chosen" and row["chosen_id"] is not None:
            others = [g for g in shown if g != row["chosen_id"]]
            if len(others) == 1:
                margin = (row["meta"] or {}).get("margin")
                yield (
                    row["chosen_id"],
                    others[0],
                    float(margin) if margin is not None else margin_for(row["strength"]),
                    False,
                )
        elif row["choice"] in ("tie", "both_bad") and include_ties and len(shown) == 2:
            a, b = sorted(shown)
            yield a, b, 0.0, True
    elif row["kind"] == "ranking" and row["ranking"]:
        ranking = list(row["ranking"])
        for i in range(len(ranking)):
            for j in range(i + 1, len(ranking)):
                yield ranking[i], ranking[j], 0.0, False


def _is_direct_pair(row) -> bool:
    return row["kind"] == "pairwise" and row["choice"] == "chosen" and row["chosen_id"] is not None


def _trl_rows(row, texts, include_ties: bool, conversational: bool) -> Iterator[dict[str, Any]]:
    prompt = _prompt_messages(row) if conversational else _prompt_string(row)
    if _is_direct_pair(row):
        if row["rejected_text"] is None:
            return
        margin = (row["meta"] or {}).get("margin")
        pairs = [
            (
                row["chosen_text"],
                row["rejected_text"],
                float(margin) if margin is not None else margin_for(row["strength"]),
                False,
            )
        ]
    else:
        pairs = [(texts[b], texts[w], m, t) for b, w, m, t in _pairs(row, include_ties)]
    for better, worse, margin, tie in pairs:
        if conversational:
            line = {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": better}],
                "rejected": [{"role": "assistant", "content": worse}],
            }
        else:
            line = {"prompt": prompt, "chosen": better, "rejected": worse}
        line["margin"] = margin
        line["annotation_id"] = row["id"]
        if include_ties:
            line["tie"] = tie
        yield line


def _sorted_ratings(row) -> list[tuple[int, str]]:
    return sorted((int(g), v) for g, v in (row["ratings"] or {}).items() if v in ("good", "bad"))


def _kto_rows(row, texts) -> Iterator[dict[str, Any]]:
    prompt = _prompt_string(row)
    for gen_id, label in _sorted_ratings(row):
        yield {"prompt": prompt, "completion": texts[gen_id], "label": label == "good", "annotation_id": row["id"]}


def _rankings_rows(row, texts) -> Iterator[dict[str, Any]]:
    if row["kind"] == "ranking" and row["ranking"]:
        yield {
            "prompt": _prompt_string(row),
            "completions": [texts[g] for g in row["ranking"]],
            "annotation_id": row["id"],
        }


def _sft_rows(row, texts) -> Iterator[dict[str, Any]]:
    prompt = _prompt_string(row)
    if row["rewrite"]:
        yield {"prompt": prompt, "completion": row["rewrite"], "source": "rewrite", "annotation_id": row["id"]}
    for gen_id, label in _sorted_ratings(row):
        if label == "good":
            yield {"prompt": prompt, "completion": texts[gen_id], "source": "good", "annotation_id": row["id"]}


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat()


def _rich_row(row, info) -> dict[str, Any]:
    margin = (row["meta"] or {}).get("margin")
    return {
        "annotation_id": row["id"],
        "task_id": row["task_id"],
        "prompt_id": row["prompt_id"],
        "prompt": _prompt_string(row),
        "prompt_messages": _prompt_messages(row) if row["prompt_messages"] is not None else None,
        "split": row["split"],
        "annotator": row["annotator"],
        "source": row["source"],
        "kind": row["kind"],
        "choice": row["choice"],
        "chosen_generation_id": row["chosen_id"],
        "strength": row["strength"],
        "margin": float(margin)
        if margin is not None
        else (margin_for(row["strength"]) if row["choice"] == "chosen" else None),
        "ranking": list(row["ranking"] or []),
        "ratings": [{"generation_id": g, "label": v} for g, v in _sorted_ratings(row)],
        "critiques": [
            {"generation_id": int(g), "text": str(t)}
            for g, t in sorted((row["critiques"] or {}).items(), key=lambda kv: int(kv[0]))
        ],
        "critique": row["critique"],
        "rewrite": row["rewrite"],
        "flags": [str(f) for f in (row["flags"] or [])],
        "positions": list(row["positions"] or []),
        "time_spent_ms": row["time_spent_ms"],
        "responses": [_response(info[g]) for g in sorted(row["positions"] or []) if g in info],
        "created_at": _iso(row["created_at"]),
    }


def _response(r) -> dict[str, Any]:
    gen_id, text, model_id, model_name, temperature, top_k, top_p, max_new, seed, source = r
    return {
        "generation_id": gen_id,
        "text": text,
        "model_version_id": model_id,
        "policy_version": model_name,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "max_new_tokens": max_new,
        "seed": seed,
        "generation_source": source,
    }


def iter_export(
    session: Session,
    *,
    fmt: str,
    filters: ExportFilters = ExportFilters(),
    include_ties: bool = False,
    stats: ExportResult | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Batches of export lines (dicts) in the export's order. Updates `stats` (counts, annotators) if given."""
    return _iter_lines(session, fmt=fmt, filters=filters, include_ties=include_ties, stats=stats, encoded=False)


def _iter_lines(
    session: Session, *, fmt: str, filters: ExportFilters, include_ties: bool, stats: ExportResult | None, encoded: bool
) -> Iterator[list[Any]]:
    """With `encoded`, the trl hot path gives each line as its JSON text (the same bytes json would write)."""
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    passing = _passing_tasks(session, filters)
    rich = fmt == "rich"
    # A Core result on the session's connection (no ORM row processing); a server-side cursor on PostgreSQL.
    connection = session.connection()
    result = connection.execution_options(stream_results=True, yield_per=BATCH).execute(
        _annotation_query(session, fmt, filters)
    )
    names = tuple(result.keys())
    trl = fmt in ("trl", "trl-conversational")
    # trl: positions are decoded only for the rows that need them (ties, rankings), see below.
    json_names = tuple(n for n in names if n in _JSON and not (trl and n == "positions"))
    task_col = names.index("task_id")
    direct = _DirectPairs(names, conversational=fmt == "trl-conversational", include_ties=include_ties) if trl else None
    for raw_batch in result.partitions():
        if passing is not None:
            raw_batch = [r for r in raw_batch if r[task_col] in passing]
        # The common trl case (a pairwise choice, both texts joined in SQL) stays a tuple; the rest become dicts.
        batch = [
            r if direct is not None and direct.matches(r) else _decode(dict(zip(names, r)), json_names)
            for r in raw_batch
        ]
        needed: set[int] = set()
        for r in batch:
            if isinstance(r, dict):
                if trl:
                    r["positions"] = json.loads(r["positions"]) if r["positions"] not in (None, "null") else None
                _needed_generations(r, needed)
        info = _generation_info(session, needed, rich=rich)
        texts = info if not rich else {g: v[1] for g, v in info.items()}
        lines: list[Any] = []
        direct_rows = []
        for r in batch:
            before = len(lines)
            if not isinstance(r, dict):
                line = direct.encoded_line(r) if encoded else direct.line(r)
                if line is not None:
                    lines.append(line)
                    direct_rows.append(r)
                continue
            if trl:
                lines.extend(_trl_rows(r, texts, include_ties, fmt == "trl-conversational"))
            elif fmt == "kto":
                lines.extend(_kto_rows(r, texts))
            elif fmt == "rankings":
                lines.extend(_rankings_rows(r, texts))
            elif fmt == "sft":
                lines.extend(_sft_rows(r, texts))
            else:
                lines.append(_rich_row(r, info))
            if stats is not None and len(lines) > before:
                stats.annotations += 1
                stats.annotators.add(r["user_id"])
                stats.sources[r["source"]] = stats.sources.get(r["source"], 0) + 1
                stats.max_annotation_id = r["id"]
        if stats is not None and direct_rows:
            direct.count(direct_rows, stats)
        if lines:
            yield lines


class _DirectPairs:
    """The hot path of `trl`: a pairwise choice whose two texts came with the row, read straight from the tuple
    (no dict, no per-row JSON unless the prompt is a chat or the line carries an imported margin). Gives the same
    line as `_trl_rows`."""

    def __init__(self, names: tuple[str, ...], *, conversational: bool, include_ties: bool):
        i = names.index
        self.kind, self.choice, self.chosen_id = i("kind"), i("choice"), i("chosen_id")
        self.id, self.text, self.messages, self.meta = i("id"), i("prompt_text"), i("prompt_messages"), i("meta")
        self.strength, self.chosen, self.rejected = i("strength"), i("chosen_text"), i("rejected_text")
        self.user, self.source = i("user_id"), i("source")
        self.conversational, self.include_ties = conversational, include_ties

    def matches(self, r) -> bool:
        return r[self.kind] == "pairwise" and r[self.choice] == "chosen" and r[self.chosen_id] is not None

    def line(self, r) -> dict[str, Any] | None:
        if r[self.rejected] is None:
            return None
        meta = r[self.meta]
        margin = None if meta in (None, "{}", "null") else json.loads(meta).get("margin")
        margin = float(margin) if margin is not None else MARGIN_BY_STRENGTH.get(r[self.strength], 0.0)
        raw_messages = r[self.messages]
        messages = None if raw_messages in (None, "null") else json.loads(raw_messages)
        if self.conversational:
            prompt: Any = (
                [{"role": "user", "content": r[self.text] or ""}]
                if messages is None
                else [{"role": m["role"], "content": m["content"]} for m in messages]
            )
            line = {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": r[self.chosen]}],
                "rejected": [{"role": "assistant", "content": r[self.rejected]}],
            }
        else:
            prompt = (
                (r[self.text] or "")
                if messages is None
                else "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)
            )
            line = {"prompt": prompt, "chosen": r[self.chosen], "rejected": r[self.rejected]}
        line["margin"] = margin
        line["annotation_id"] = r[self.id]
        if self.include_ties:
            line["tie"] = False
        return line

    def encoded_line(self, r) -> str | None:
        if (
            self.conversational
            or r[self.rejected] is None
            or r[self.messages] not in (None, "null")
            or r[self.meta] not in (None, "{}", "null")
        ):
            line = self.line(r)
            return None if line is None else _dumps(line) + "\n"
        # A plain-text prompt and a strength margin: the line json.dumps would write, assembled directly.
        tie = ', "tie": false' if self.include_ties else ""
        return (
            f'{{"prompt": {_encode_str(r[self.text] or "")}, "chosen": {_encode_str(r[self.chosen])}, '
            f'"rejected": {_encode_str(r[self.rejected])}, '
            f'"margin": {MARGIN_BY_STRENGTH.get(r[self.strength], 0.0)!r}, "annotation_id": {r[self.id]}{tie}}}\n'
        )

    def count(self, rows: list, stats: ExportResult) -> None:
        stats.annotations += len(rows)
        stats.annotators.update(r[self.user] for r in rows)
        for source, n in Counter(r[self.source] for r in rows).items():
            stats.sources[source] = stats.sources.get(source, 0) + n
        stats.max_annotation_id = rows[-1][self.id]


# ---- writing files ---------------------------------------------------------------------------------------------


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


_dumps = json.JSONEncoder(ensure_ascii=False).encode
_encode_str = json.encoder.encode_basestring  # what _dumps writes for a str (ensure_ascii=False)


def _jsonl_chunks(batches: Iterator[list[Any]]) -> Iterator[tuple[str, int]]:
    for lines in batches:
        yield "".join(line if isinstance(line, str) else _dumps(line) + "\n" for line in lines), len(lines)


def write_export(
    session: Session,
    *,
    fmt: str,
    out: Path,
    filters: ExportFilters = ExportFilters(),
    include_ties: bool = False,
    as_csv: bool = False,
) -> ExportResult:
    """Write the export to `out` (via a temporary file, renamed when complete) and `out.sha256`."""
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
    digest = hashlib.sha256()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    batches = _iter_lines(
        session, fmt=fmt, filters=filters, include_ties=include_ties, stats=result, encoded=not as_csv
    )
    try:
        with open(tmp, "wb") as fh:
            for chunk, n in _csv_chunks(batches) if as_csv else _jsonl_chunks(batches):
                data = chunk.encode("utf-8")
                fh.write(data)
                digest.update(data)
                result.rows += n
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    result.sha256 = digest.hexdigest()
    out.with_name(out.name + ".sha256").write_text(f"{result.sha256}  {out.name}\n")
    return result


def default_filename(fmt: str, as_csv: bool = False) -> str:
    return f"{fmt}.{'csv' if as_csv else 'jsonl'}"


# ---- dataset card ------------------------------------------------------------------------------------------------

LOADING = {
    "trl": 'load_dataset("json", data_files="{name}")  # RewardTrainer / DPOTrainer (standard preference)',
    "trl-conversational": 'load_dataset("json", data_files="{name}")  # RewardTrainer / DPOTrainer (conversational)',
    "kto": 'load_dataset("json", data_files="{name}")  # KTOTrainer (unpaired preference)',
    "rankings": 'load_dataset("json", data_files="{name}")  # K responses best first; K(K-1)/2 pairs each',
    "sft": 'load_dataset("json", data_files="{name}")  # SFTTrainer (prompt-completion)',
    "rich": 'load_dataset("{kind}", data_files="{name}")  # everything, joined to the others by annotation_id',
}


def write_card(session: Session, *, result: ExportResult, path: Path | None = None) -> Path:
    """A dataset card (README.md beside the export): provenance, counts, filters, agreement."""
    from app.services.stats import agreement  # only the card needs the agreement figures

    path = path or result.path.with_name("README.md")
    source = result.filters.get("source", "all")
    figures = agreement(session, source=source, queue_size=0)
    users = {u for u in result.annotators}
    alpha_lines = []
    for kind in ("pairwise", "ranking", "rating"):
        a = figures[kind]
        value = "n/a" if a["alpha"] is None else f"{a['alpha']:.3f}"
        alpha_lines.append(f"| {kind} | {a['level']} | {value} | {a['units']} |")
    filters = "\n".join(f"- `{k}`: {json.dumps(v)}" for k, v in result.filters.items())
    kind = "csv" if result.csv else "json"
    card = f"""---
pretty_name: rlhf-studio {result.format} export
tags: [rlhf, preference, human-feedback]
---
# rlhf-studio export: `{result.format}`

Exported by rlhf-studio from its annotation database. The same database and filters give the same bytes.

## Files
- `{result.path.name}`: {result.rows} lines, sha256 `{result.sha256}` (also in `{result.path.name}.sha256`)

```python
from datasets import load_dataset
ds = {LOADING[result.format].format(name=result.path.name, kind=kind)}
```

## Provenance and counts
- annotations used: {result.annotations} (highest annotation id {result.max_annotation_id})
- annotators: {len(users)} (pseudonymous ids in the `rich` export)
- by source: {json.dumps(result.sources, sort_keys=True)}
- ties and both-bad included: {"yes (`tie` column)" if result.include_ties else "no"}
- margin from strength: 1 slightly -> 1/3, 2 clearly -> 2/3, 3 much -> 1.0; ranking pairs and ties 0.0

## Filters
{filters}

## Agreement (Krippendorff's alpha on overlapped tasks, source `{source}`)
| kind | level | alpha | units |
| --- | --- | --- | --- |
{chr(10).join(alpha_lines)}
"""
    path.write_text(card, encoding="utf-8")
    return path


def filters_from_strings(
    *,
    since: str | None = None,
    until: str | None = None,
    until_id: int | None = None,
    source: str | None = None,
    annotators: list[str] | None = None,
    split: str | None = None,
    min_agreement: float | None = None,
) -> ExportFilters:
    """Filters as the CLI, the API and the admin page take them (empty strings mean no filter)."""
    names = tuple(n.strip() for a in (annotators or []) for n in a.split(",") if n.strip())
    return ExportFilters(
        since=parse_time(since, name="since"),
        until=parse_time(until, name="until"),
        until_id=until_id,
        source=source or "all",
        annotators=names,
        split=split or None,
        min_agreement=min_agreement,
    )


def export_to_data_dir(
    *, data_dir: Path, fmt: str, filters: ExportFilters, include_ties: bool = False, as_csv: bool = False
) -> ExportResult:
    """For HTTP: the export is written to a file under data_dir/exports first (a read-only session), then served."""
    import uuid

    from app.db import get_read_sessionmaker

    out = Path(data_dir) / "exports" / f"{uuid.uuid4().hex}-{default_filename(fmt, as_csv)}"
    session = get_read_sessionmaker()()
    try:
        return write_export(session, fmt=fmt, out=out, filters=filters, include_ties=include_ties, as_csv=as_csv)
    finally:
        session.close()


def repr_digest(sha256_hex: str) -> str:
    """RFC 9530 `Repr-Digest` value: sha-256=:<base64 of the digest>:"""
    import base64

    return f"sha-256=:{base64.b64encode(bytes.fromhex(sha256_hex)).decode()}:"
