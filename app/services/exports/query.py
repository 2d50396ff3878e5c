"""The annotations an export reads: one query per format (only the columns and kinds it needs, in id order), the
generation texts a batch refers to, and the tasks that pass an agreement filter. With labels=adjudicated, a second
query per format gives the tasks' final labels (app.services.review) in the same columns, in place of their human
annotations, which the first query then leaves out."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import BigInteger, Integer, String, Text, cast, func, literal, null, select
from sqlalchemy.orm import Session, aliased

from app.models import (
    Adjudication,
    Annotation,
    Generation,
    GuidelineVersion,
    ModelVersion,
    Prompt,
    Task,
    TaskPosition,
    User,
)
from app.services.exports.filters import ExportFilters
from app.services.training_labels import adjudicated_tasks, current_adjudications
from domain.vocabulary import TASK_KINDS

PAIRWISE, RANKING, RATING = TASK_KINDS

# Which annotation kinds can give lines of each format (the rest are never read).
KINDS_FOR = {
    "trl": (PAIRWISE, RANKING),
    "trl-conversational": (PAIRWISE, RANKING),
    "rankings": (RANKING,),
    "kto": None,
    "sft": None,
    "rich": None,
}

PLAIN = {
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
    "selection": Task.selection,
    "selection_score": Task.selection_score,
    "flag_reason": Task.flag_reason,  # `rich` only
    "created_at": Annotation.created_at,
    "user_id": Annotation.user_id,
    "annotator": User.public_id,
    "prompt_id": Prompt.id,
    "prompt_text": Prompt.text,
    "split": Prompt.split,
    "guideline_version_id": Annotation.guideline_version_id,
    "guideline_version": GuidelineVersion.version,  # `rich` only: joined there
}
JSON = {
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
        "rewrite",
        "ratings",
    ),
    "kto": ("id", "task_id", "kind", "source", "user_id", "prompt_text", "ratings", "prompt_messages"),
    "rankings": ("id", "task_id", "kind", "source", "user_id", "prompt_text", "ranking", "prompt_messages"),
    "sft": ("id", "task_id", "kind", "source", "user_id", "prompt_text", "rewrite", "ratings", "prompt_messages"),
    "rich": (*PLAIN, *JSON),
}
_NEEDS["trl-conversational"] = _NEEDS["trl"]


def _columns(fmt: str) -> list:
    return [PLAIN[name].label(name) if name in PLAIN else cast(JSON[name], Text).label(name) for name in _NEEDS[fmt]]


def decode_json(raw: str | None) -> Any:
    """A JSON column read as text; the common empty values without the parser."""
    if raw is None or raw == "null":
        return None
    if raw == "{}":
        return {}
    return json.loads(raw)


def decode(row: dict[str, Any], json_names: tuple[str, ...]) -> dict[str, Any]:
    for name in json_names:
        row[name] = decode_json(row[name])
    return row


def _join_pair_texts(stmt):
    """For `trl`: a pairwise choice's two texts straight from the database (the rejected one is the task's other
    position), so the common case needs no per-batch lookup and no JSON decoding. Other rows get NULLs."""
    chosen, other = aliased(Generation), aliased(Generation)
    position = aliased(TaskPosition)
    direct = (Annotation.kind == PAIRWISE) & (Annotation.choice == "chosen")
    return (
        stmt.add_columns(chosen.text.label("chosen_text"), other.text.label("rejected_text"))
        .outerjoin(chosen, (chosen.id == Annotation.chosen_id) & direct)
        .outerjoin(
            position,
            (position.task_id == Annotation.task_id) & direct & (position.generation_id != Annotation.chosen_id),
        )
        .outerjoin(other, other.id == position.generation_id)
    )


def _admitted(stmt, session: Session, filters: ExportFilters):
    """`stmt` (over annotations joined to their task, prompt and annotator) limited to the annotations the filters
    admit: retired prompts and tasks are never exported for training again, nor the labels of an excluded
    annotator; gold tasks' annotations are never preference data (they grade the annotator)."""
    stmt = stmt.where(
        Annotation.deleted_at.is_(None),
        Task.retired_at.is_(None),
        Prompt.retired_at.is_(None),
        Task.gold.is_(False),
        User.labels_excluded.is_(False),
    )
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
    return stmt


def _of_kinds(stmt, fmt: str, rewrites: str, kind, rewrite):
    """Only the labels (annotations or final labels: their `kind` and `rewrite` columns) that give `fmt` lines."""
    kinds = KINDS_FOR[fmt]
    if kinds is not None and fmt in ("trl", "trl-conversational") and rewrites == "only":
        return stmt.where(rewrite.is_not(None))
    if kinds is not None and fmt in ("trl", "trl-conversational") and rewrites == "include":
        # a rewrite makes pairs whatever the task's kind (a rating's rewrite beats its bad responses)
        return stmt.where(kind.in_(kinds) | rewrite.is_not(None))
    if kinds is not None:
        return stmt.where(kind.in_(kinds))
    return stmt


def annotation_query(session: Session, fmt: str, filters: ExportFilters, *, rewrites: str = "include"):
    stmt = (
        select(*_columns(fmt))
        .join(Task, Task.id == Annotation.task_id)
        .join(Prompt, Prompt.id == Task.prompt_id)
        .join(User, User.id == Annotation.user_id)
    )
    if fmt in ("trl", "trl-conversational"):
        stmt = _join_pair_texts(stmt)
    if fmt == "rich":
        stmt = stmt.outerjoin(GuidelineVersion, GuidelineVersion.id == Annotation.guideline_version_id)
    stmt = _of_kinds(stmt, fmt, rewrites, Annotation.kind, Annotation.rewrite)
    stmt = _admitted(stmt, session, filters)
    if filters.labels == "adjudicated":
        stmt = stmt.where((Annotation.source != "human") | Annotation.task_id.not_in(adjudicated_tasks()))
    return stmt.order_by(Annotation.id)


def adjudication_query(session: Session, fmt: str, filters: ExportFilters, *, rewrites: str = "include"):
    """The final labels (each task's current adjudication) of the tasks with a human annotation the filters admit,
    in the format's columns (as `annotation_query` names them). A line's `annotation_id` is the newest of the
    annotations it stands in for: unique, within `until_id`, and the same for a ranking's rankings and trl lines;
    they come in that id's order. The `annotator` of a final label is its reviewer's pseudonymous id."""
    admitted = (
        _admitted(
            select(Annotation.task_id, func.max(Annotation.id).label("last_id"))
            .join(Task, Task.id == Annotation.task_id)
            .join(Prompt, Prompt.id == Task.prompt_id)
            .join(User, User.id == Annotation.user_id),
            session,
            filters,
        )
        .where(Annotation.source == "human")
        .group_by(Annotation.task_id)
        .subquery()
    )
    final = {
        "id": admitted.c.last_id,
        "task_id": Adjudication.task_id,
        "kind": Adjudication.kind,
        "source": literal("human", String),
        "choice": Adjudication.choice,
        "chosen_id": Adjudication.chosen_id,
        "strength": Adjudication.strength,
        "critique": null(),
        "rewrite": Adjudication.rewrite,
        "time_spent_ms": cast(null(), Integer),
        "selection": Task.selection,
        "selection_score": Task.selection_score,
        "created_at": Adjudication.created_at,
        "user_id": Adjudication.reviewer_id,
        "annotator": User.public_id,
        "prompt_id": Prompt.id,
        "prompt_text": Prompt.text,
        "split": Prompt.split,
        "guideline_version_id": cast(null(), BigInteger),
        "guideline_version": cast(null(), Integer),
    }
    final_json = {"positions": Adjudication.positions, "ranking": Adjudication.ranking, "ratings": Adjudication.ratings}
    final_json.update(prompt_messages=Prompt.messages)
    columns = [
        final[name].label(name)
        if name in final
        else cast(final_json[name], Text).label(name)
        if name in final_json
        else null().label(name)
        for name in _NEEDS[fmt]
    ]
    if fmt == "rich":
        columns += [Adjudication.id.label("adjudication_id"), Adjudication.note.label("review_note")]
    stmt = (
        select(*columns)
        .select_from(Adjudication)
        .join(admitted, admitted.c.task_id == Adjudication.task_id)
        .join(Task, Task.id == Adjudication.task_id)
        .join(Prompt, Prompt.id == Task.prompt_id)
        .join(User, User.id == Adjudication.reviewer_id)
        .where(Adjudication.id.in_(current_adjudications()))
    )
    return _of_kinds(stmt, fmt, rewrites, Adjudication.kind, Adjudication.rewrite).order_by(admitted.c.last_id)


def generation_info(session: Session, ids: set[int], *, rich: bool) -> dict[int, Any]:
    """Text by generation id; for `rich`, the whole row (text, model, sampling settings, source)."""
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


def needed_generations(row: dict[str, Any], ids: set[int]) -> None:
    ids.update(row.get("positions") or ())
    if row.get("chosen_id") is not None:
        ids.add(row["chosen_id"])
    ids.update(row.get("ranking") or ())
    ids.update(int(g) for g in (row.get("ratings") or ()))


def passing_tasks(session: Session, filters: ExportFilters) -> set[int] | None:
    if filters.min_agreement is None:
        return None
    from app.services.stats import task_agreements  # stats imports nothing from here; local keeps the graph flat

    agreements = task_agreements(session, source=filters.source)
    return {task_id for task_id, value in agreements.items() if value is not None and value >= filters.min_agreement}
