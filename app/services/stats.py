"""Figures for the stats page and `GET /api/v1/stats`: counts, throughput, agreement, biases, disagreements, and
each annotator's gold accuracy with its Wilson 95% interval (app.services.gold).

Agreement and the per-task score are defined in agreement.py. Biases are per annotator over pairwise choices of
one response: position bias = share choosing the response shown on the left (first); length bias = share
choosing the longer response (pairs of equal length left out). 0.5 is no bias. Tie and both-bad rates are
shares of pairwise annotations. Soft-deleted (undone) annotations never count.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Text, case, cast, func, select
from sqlalchemy.orm import Session, aliased

from app.db import get_read_sessionmaker
from app.models import Annotation, Generation, Job, Prompt, Task, User
from app.services.agreement import krippendorff_alpha, task_agreement
from app.services.errors import ServiceError
from app.services.gold import gold_accuracy_by_username
from domain.vocabulary import SOURCE_FILTERS, one_of

BATCH = 2000


def _live(stmt, source: str = "all"):
    stmt = stmt.where(Annotation.deleted_at.is_(None))
    return stmt if source == "all" else stmt.where(Annotation.source == source)


def counts(session: Session) -> dict[str, Any]:
    state = case((Task.completed.is_(True), "completed"), (Task.done_count > 0, "in_progress"), else_="open")
    tasks: dict[str, dict[str, int]] = defaultdict(dict)
    for kind, st, n in session.execute(select(Task.kind, state, func.count()).group_by(Task.kind, state)):
        tasks[kind][st] = n
    annotations: dict[str, dict[str, int]] = defaultdict(dict)
    for kind, source, n in session.execute(
        _live(select(Annotation.kind, Annotation.source, func.count())).group_by(Annotation.kind, Annotation.source)
    ):
        annotations[kind][source] = n
    prompts = dict(session.execute(select(Prompt.split, func.count()).group_by(Prompt.split)).all())
    jobs = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    return {
        "tasks": dict(tasks),
        "annotations": dict(annotations),
        "prompts": prompts,
        "generations": session.scalar(select(func.count()).select_from(Generation)) or 0,
        "jobs": jobs,
    }


def throughput(session: Session, *, days: int = 30, now: datetime | None = None) -> list[dict[str, Any]]:
    """Annotations per annotator per day (UTC) over the last `days` days."""
    since = (now or datetime.now(UTC)) - timedelta(days=days)
    created = Annotation.created_at
    if session.get_bind().dialect.name == "postgresql":
        created = func.timezone("UTC", created)  # the UTC day, whatever the server's TimeZone setting
    day = func.date(created)
    rows = session.execute(
        _live(select(User.username, day, func.count()).join(User, User.id == Annotation.user_id))
        .where(Annotation.created_at >= since)
        .group_by(User.username, day)
        .order_by(day, User.username)
    )
    return [
        {"annotator": name, "day": d.isoformat() if isinstance(d, date) else str(d), "count": n} for name, d, n in rows
    ]


def _overlapped_annotations(session: Session, source: str) -> Iterator[list]:
    """Annotations of tasks with at least two of them, grouped by task (one list per task). Gold tasks are left
    out: their annotations measure annotators against the answer, they are not preferences to agree on."""
    multi = (
        _live(select(Annotation.task_id), source)
        .join(Task, Task.id == Annotation.task_id)
        .where(Task.gold.is_(False))
        .group_by(Annotation.task_id)
        .having(func.count() >= 2)
    )
    # The pairwise label (agreement.py: lower / higher / tie / both_bad) is computed by the database; only rankings
    # and ratings come back as JSON text, decoded in _value.
    left, right = Annotation.positions[0].as_integer(), Annotation.positions[1].as_integer()
    chosen = Annotation.choice == "chosen"
    label = case(
        (Annotation.choice.in_(("tie", "both_bad")), Annotation.choice),
        (chosen & (Annotation.chosen_id == left) & (left < right), "lower"),
        (chosen & (Annotation.chosen_id == right) & (right < left), "lower"),
        (chosen & ((Annotation.chosen_id == left) | (Annotation.chosen_id == right)), "higher"),
        else_=None,
    )
    stmt = _live(
        select(
            Annotation.task_id,
            Annotation.user_id,
            Annotation.kind,
            label.label("label"),
            cast(Annotation.ranking, Text).label("ranking"),
            cast(Annotation.ratings, Text).label("ratings"),
        ),
        source,
    )
    stmt = stmt.where(Annotation.task_id.in_(multi)).order_by(Annotation.task_id, Annotation.id)
    group: list = []
    # streaming as the statement's option: set on the connection it would stay, and on PostgreSQL a later INSERT
    # in the same session would be declared as a server-side cursor (a syntax error)
    result = session.connection().execute(stmt.execution_options(stream_results=True, yield_per=BATCH))
    for batch in result.partitions():
        for row in batch:
            if group and group[0].task_id != row.task_id:
                yield group
                group = []
            group.append(row)
    if group:
        yield group


def _json(raw: str | None) -> Any:
    return None if raw is None or raw == "null" else json.loads(raw)


def _value(row) -> Any:
    if row.kind == "pairwise":
        return row.label
    if row.kind == "ranking":
        ranking = _json(row.ranking)
        return list(ranking) if ranking else None
    ratings = {int(g): v for g, v in (_json(row.ratings) or {}).items() if v in ("good", "bad")}
    return ratings or None


def task_agreements(session: Session, *, source: str = "all") -> dict[int, float | None]:
    return {
        group[0].task_id: task_agreement(group[0].kind, [_value(r) for r in group])
        for group in _overlapped_annotations(session, source)
    }


def agreement(session: Session, *, source: str = "all", queue_size: int = 20) -> dict[str, Any]:
    """Krippendorff's alpha overall and per annotator, and the most contested tasks."""
    units: dict[str, list[dict]] = {"pairwise": [], "ranking": [], "rating": []}
    contested: list[tuple[float, int, int, str]] = []
    for group in _overlapped_annotations(session, source):
        kind = group[0].kind
        values = [(r.user_id, _value(r)) for r in group]
        score = task_agreement(kind, [v for _, v in values])
        if score is not None:
            contested.append((score, -len(group), group[0].task_id, kind))
        if kind == "pairwise":
            units["pairwise"].append({u: v for u, v in values if v is not None})
        elif kind == "ranking":
            per_gen: dict[int, dict] = defaultdict(dict)
            for user, ranking in values:
                for rank, gen in enumerate(ranking or [], start=1):
                    per_gen[gen][user] = rank
            units["ranking"].extend(per_gen.values())
        else:
            per_gen = defaultdict(dict)
            for user, ratings in values:
                for gen, label in (ratings or {}).items():
                    per_gen[gen][user] = label
            units["rating"].extend(per_gen.values())
    names = dict(session.execute(select(User.id, User.username)).all())
    out: dict[str, Any] = {}
    for kind, level in (("pairwise", "nominal"), ("ranking", "ordinal"), ("rating", "nominal")):
        alpha, per = krippendorff_alpha(units[kind], level=level, per_annotator=True)
        out[kind] = {
            "level": level,
            "alpha": alpha,
            "units": sum(1 for u in units[kind] if len(u) >= 2),
            "per_annotator": {names.get(u, str(u)): a for u, a in sorted(per.items())},
        }
    contested.sort()
    out["disagreements"] = [
        {"task_id": t, "kind": k, "agreement": s, "annotations": -n} for s, n, t, k in contested[:queue_size] if s < 1.0
    ]
    return out


def annotator_figures(session: Session, *, source: str = "all") -> dict[str, dict[str, Any]]:
    """Per annotator: annotations, pairwise counts, tie and both-bad rates, position and length bias (one
    aggregate query each; the shown order comes from the annotation's own `positions`)."""
    figures: dict[str, dict[str, Any]] = {}
    names = dict(session.execute(select(User.id, User.username)).all())
    totals = session.execute(
        _live(select(Annotation.user_id, func.count(), func.avg(Annotation.time_spent_ms)), source).group_by(
            Annotation.user_id
        )
    )
    for user_id, n, avg_ms in totals:
        figures[names[user_id]] = {
            "annotations": n,
            "mean_time_ms": float(avg_ms) if avg_ms is not None else None,
            "pairwise": 0,
            "ties": 0,
            "both_bad": 0,
            "choices": 0,
            "length_pairs": 0,
        }
    left, right = Annotation.positions[0].as_integer(), Annotation.positions[1].as_integer()
    shown_left, shown_right = aliased(Generation), aliased(Generation)
    chose = (Annotation.choice == "chosen") & ((Annotation.chosen_id == left) | (Annotation.chosen_id == right))
    chose_left = Annotation.chosen_id == left
    chosen_len = case((chose_left, func.length(shown_left.text)), else_=func.length(shown_right.text))
    other_len = case((chose_left, func.length(shown_right.text)), else_=func.length(shown_left.text))

    def count_if(condition):
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    stmt = (
        _live(
            select(
                Annotation.user_id,
                func.count(),
                count_if(Annotation.choice == "tie"),
                count_if(Annotation.choice == "both_bad"),
                count_if(chose),
                count_if(chose & chose_left),
                count_if(chose & (chosen_len != other_len)),
                count_if(chose & (chosen_len > other_len)),
            ),
            source,
        )
        .outerjoin(shown_left, shown_left.id == left)
        .outerjoin(shown_right, shown_right.id == right)
        .where(Annotation.kind == "pairwise")
        .group_by(Annotation.user_id)
    )
    for user_id, pairwise, ties, both_bad, choices, lefts, length_pairs, longer in session.execute(stmt):
        f = figures[names[user_id]]
        f.update(pairwise=pairwise, ties=ties, both_bad=both_bad, choices=choices, length_pairs=length_pairs)
        f["position_bias"] = lefts / choices if choices else None
        f["length_bias"] = longer / length_pairs if length_pairs else None
    for f in figures.values():
        f.setdefault("position_bias", None)
        f.setdefault("length_bias", None)
        f["tie_rate"] = f["ties"] / f["pairwise"] if f["pairwise"] else None
        f["both_bad_rate"] = f["both_bad"] / f["pairwise"] if f["pairwise"] else None
    return figures


def overall_rates(figures: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    pairwise = sum(f["pairwise"] for f in figures.values())
    return {
        "tie_rate": sum(f["ties"] for f in figures.values()) / pairwise if pairwise else None,
        "both_bad_rate": sum(f["both_bad"] for f in figures.values()) / pairwise if pairwise else None,
    }


def all_stats(session: Session, *, source: str = "all", days: int = 30) -> dict[str, Any]:
    figures = annotator_figures(session, source=source)
    return {
        "counts": counts(session),
        "throughput": throughput(session, days=days),
        "agreement": agreement(session, source=source),
        "annotators": figures,
        "rates": overall_rates(figures),
        # Gold tasks are answered by people only: with source "ai" there is nothing to show.
        "gold_accuracy": gold_accuracy_by_username(session) if source != "ai" else {},
    }


def read_stats(*, source: str, days: int) -> dict[str, Any]:
    """all_stats on a read-only session: a long read never holds SQLite's writer (nor the writer gate)."""
    problem = one_of("source", source, SOURCE_FILTERS)
    if problem:
        raise ServiceError(problem)
    session = get_read_sessionmaker()()
    try:
        return all_stats(session, source=source, days=days)
    finally:
        session.close()
