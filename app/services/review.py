"""Review: a reviewer (or an admin) works the disagreement queue, the tasks whose human annotations disagree
(agreement below 1, app.services.agreement's task score), sees every annotation of a task with its annotator, and
records the task's final label with a note: an adjudication.

A final label has the shape of the task kind's answer, in generation ids: pairwise {"choice": "chosen"|"tie"|
"both_bad", "chosen_id", "strength" 1-3 with chosen}, ranking {"ranking": every id, best first}, rating {"ratings":
{"<id>": "good"|"bad"} for every id}; any kind may add a "rewrite" (an ideal response). A task's newest adjudication
is its current one: a new one supersedes it, the older stay as history.

Exports and rounds take `labels` raw (the annotators' own) or adjudicated: a task with a current adjudication then
gives its final label in place of its human annotations (app.services.training_labels, app.services.exports).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.inputs import storable_problem
from app.models import Adjudication, Annotation, Task, TaskPosition, User
from app.services.agreement import task_agreement
from app.services.data_manager import TaskDetail, task_detail
from app.services.errors import Conflict, NotFound, ServiceError
from app.services.stats import task_agreements
from app.services.training_labels import current_adjudications

CHOICES = ("chosen", "tie", "both_bad")
STRENGTHS = (1, 2, 3)
QUEUE_STATES = ("pending", "adjudicated", "all")
MAX_NOTE_CHARS = 4000
MAX_REWRITE_CHARS = 20000


class ReviewError(ServiceError):
    """A final label or note that does not fit the task; the message is safe to show."""


@dataclass
class QueueItem:
    task_id: int
    kind: str
    agreement: float
    annotations: int
    adjudicated: bool
    reviewer: str | None = None
    adjudicated_at: datetime | None = None


def review_queue(session: Session, *, state: str = "pending", limit: int = 100) -> list[QueueItem]:
    """Tasks with at least two live human annotations that disagree (not gold, not retired), least agreement first.
    `state`: pending (no adjudication yet), adjudicated, or all."""
    if state not in QUEUE_STATES:
        raise ReviewError(f"state must be one of {', '.join(QUEUE_STATES)}, not {state!r}")
    disagreeing = {t: a for t, a in task_agreements(session, source="human").items() if a is not None and a < 1.0}
    if not disagreeing:
        return []
    ids = sorted(disagreeing)
    tasks = dict(session.execute(select(Task.id, Task.kind).where(Task.id.in_(ids), Task.retired_at.is_(None))).all())
    counts = dict(
        session.execute(
            select(Annotation.task_id, func.count())
            .where(Annotation.task_id.in_(ids), Annotation.source == "human", Annotation.deleted_at.is_(None))
            .group_by(Annotation.task_id)
        ).all()
    )
    current = {
        task_id: (username, created_at)
        for task_id, username, created_at in session.execute(
            select(Adjudication.task_id, User.username, Adjudication.created_at)
            .join(User, User.id == Adjudication.reviewer_id)
            .where(Adjudication.id.in_(current_adjudications()), Adjudication.task_id.in_(ids))
        )
    }
    items = []
    for task_id in ids:
        if task_id not in tasks:
            continue
        adjudicated = task_id in current
        if (state == "pending" and adjudicated) or (state == "adjudicated" and not adjudicated):
            continue
        reviewer, at = current.get(task_id, (None, None))
        items.append(
            QueueItem(task_id, tasks[task_id], disagreeing[task_id], counts.get(task_id, 0), adjudicated, reviewer, at)
        )
    items.sort(key=lambda i: (i.agreement, -i.annotations, i.task_id))
    return items[:limit]


@dataclass
class AdjudicationView:
    id: int
    task_id: int
    reviewer: str
    kind: str
    label: dict[str, Any]
    note: str
    created_at: datetime


def _view(adjudication: Adjudication, reviewer: str) -> AdjudicationView:
    a = adjudication
    if a.kind == "pairwise":
        label: dict[str, Any] = {"choice": a.choice, "chosen_id": a.chosen_id, "strength": a.strength}
    elif a.kind == "ranking":
        label = {"ranking": list(a.ranking or [])}
    else:
        label = {"ratings": dict(a.ratings or {})}
    if a.rewrite:
        label["rewrite"] = a.rewrite
    return AdjudicationView(a.id, a.task_id, reviewer, a.kind, label, a.note, a.created_at)


@dataclass
class ReviewTask:
    detail: TaskDetail  # the task, its responses and every annotation with its annotator
    agreement: float | None
    current: AdjudicationView | None
    history: list[AdjudicationView] = field(default_factory=list)  # every adjudication, newest first


def review_task(session: Session, task_id: int) -> ReviewTask:
    detail = task_detail(session, task_id)
    if detail.task.gold:
        raise NotFound(f"task {task_id} is a gold task: its answer is known, it is not reviewed")
    rows = session.execute(
        select(Adjudication, User.username)
        .join(User, User.id == Adjudication.reviewer_id)
        .where(Adjudication.task_id == task_id)
        .order_by(Adjudication.id.desc())
    ).all()
    history = [_view(a, name) for a, name in rows]
    return ReviewTask(detail, _agreement(session, detail.task), history[0] if history else None, history)


def _agreement(session: Session, task: Task) -> float | None:
    """The task's agreement over its live human annotations, in agreement.py's values (a pair's outcome by the
    lower or higher generation id), without the scan of every task that task_agreements makes."""
    rows = session.execute(
        select(Annotation.choice, Annotation.chosen_id, Annotation.positions, Annotation.ranking, Annotation.ratings)
        .where(Annotation.task_id == task.id, Annotation.source == "human", Annotation.deleted_at.is_(None))
        .order_by(Annotation.id)
    ).all()
    values: list[Any] = []
    for choice, chosen_id, positions, ranking, ratings in rows:
        if task.kind == "pairwise":
            pair = sorted(positions or [])[:2]
            if choice in ("tie", "both_bad"):
                values.append(choice)
            elif choice == "chosen" and chosen_id in pair:
                values.append("lower" if chosen_id == pair[0] else "higher")
        elif task.kind == "ranking":
            values.append(list(ranking) if ranking else None)
        else:
            values.append({int(g): v for g, v in (ratings or {}).items() if v in ("good", "bad")} or None)
    return task_agreement(task.kind, values)


def _response_ids(session: Session, task_id: int) -> list[int]:
    return list(
        session.scalars(
            select(TaskPosition.generation_id).where(TaskPosition.task_id == task_id).order_by(TaskPosition.position)
        )
    )


def _gen_id(value: Any, ids: list[int], name: str) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
        raise ReviewError(f"{name} must be a response id, not {value!r}")
    if int(value) not in ids:
        raise ReviewError(f"{name} {value!r} is not one of the task's responses {ids}")
    return int(value)


def checked_label(kind: str, ids: list[int], label: dict[str, Any]) -> dict[str, Any]:
    """The final label as stored (Adjudication's columns), checked against the task's kind and responses."""
    allowed = {"pairwise": {"choice", "chosen_id", "strength"}, "ranking": {"ranking"}, "rating": {"ratings"}}[kind]
    unknown = sorted(k for k, v in label.items() if k not in allowed | {"rewrite"} and v is not None)
    if unknown:
        raise ReviewError(f"a {kind} label takes {', '.join(sorted(allowed))} (and rewrite), not {', '.join(unknown)}")
    out: dict[str, Any] = {"choice": None, "chosen_id": None, "strength": None, "ranking": None, "ratings": None}
    if kind == "pairwise":
        choice = label.get("choice")
        if choice not in CHOICES:
            raise ReviewError(f"choice must be one of {', '.join(CHOICES)}, not {choice!r}")
        out["choice"] = choice
        if choice == "chosen":
            out["chosen_id"] = _gen_id(label.get("chosen_id"), ids, "chosen_id")
            strength = label.get("strength", 2)
            if strength not in STRENGTHS or isinstance(strength, bool):
                raise ReviewError(f"strength must be 1, 2 or 3, not {strength!r}")
            out["strength"] = strength
        elif label.get("chosen_id") is not None or label.get("strength") is not None:
            raise ReviewError(f"chosen_id and strength only go with choice=chosen, not {choice}")
    elif kind == "ranking":
        ranking = label.get("ranking")
        if not isinstance(ranking, list) or len(ranking) != len(ids):
            raise ReviewError(f"the ranking must list all {len(ids)} responses, best first")
        ranked = [_gen_id(g, ids, "ranking entry") for g in ranking]
        if set(ranked) != set(ids):
            raise ReviewError("the ranking must name each response once")
        out["ranking"] = ranked
    else:
        ratings = label.get("ratings")
        if not isinstance(ratings, dict):
            raise ReviewError('ratings must be an object {"<response id>": "good"|"bad"}')
        rated = {}
        for key, value in ratings.items():
            if value not in ("good", "bad"):
                raise ReviewError(f"a rating must be good or bad, not {value!r}")
            rated[str(_gen_id(key, ids, "ratings key"))] = value
        missing = sorted(set(ids) - {int(k) for k in rated})
        if missing:
            raise ReviewError(f"the ratings must rate every response: missing {missing}")
        out["ratings"] = rated
    rewrite = label.get("rewrite")
    if rewrite is not None and not isinstance(rewrite, str):
        raise ReviewError("rewrite must be text")
    rewrite = (rewrite or "").strip() or None
    if rewrite is not None and (len(rewrite) > MAX_REWRITE_CHARS or storable_problem(rewrite)):
        raise ReviewError(f"rewrite must be storable text of at most {MAX_REWRITE_CHARS} characters")
    out["rewrite"] = rewrite
    return out


def adjudicate(session: Session, *, task_id: int, reviewer: User, label: dict[str, Any], note: str) -> Adjudication:
    """Record `reviewer`'s final label of the task with a note; it supersedes the task's current one. Flushes, the
    caller commits. Refused: no such task (404), a gold or retired task or one without a human annotation (409), a
    label that does not fit the task or an empty note (422)."""
    task = session.get(Task, task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    if task.gold:
        raise Conflict(f"task {task_id} is a gold task: its answer is known, it is not reviewed")
    if task.retired_at is not None:
        raise Conflict(f"task {task_id} is retired: it is never trained on or exported again")
    humans = session.scalar(
        select(func.count()).where(
            Annotation.task_id == task_id, Annotation.source == "human", Annotation.deleted_at.is_(None)
        )
    )
    if not humans:
        raise Conflict(f"task {task_id} has no human annotation to review")
    note = (note or "").strip()
    if not note:
        raise ReviewError("a note is needed: say why this is the final label")
    if len(note) > MAX_NOTE_CHARS or storable_problem(note):
        raise ReviewError(f"the note must be storable text of at most {MAX_NOTE_CHARS} characters")
    ids = _response_ids(session, task_id)
    stored = checked_label(task.kind, ids, label)
    row = Adjudication(task_id=task_id, reviewer_id=reviewer.id, kind=task.kind, positions=ids, note=note, **stored)
    session.add(row)
    session.flush()
    return row


def adjudication_view(session: Session, adjudication: Adjudication) -> AdjudicationView:
    return _view(adjudication, session.get(User, adjudication.reviewer_id).username)


def form_label(
    kind: str, *, choice: str, strength: str, gens: list[str], ranks: list[str], ratings: list[str], rewrite: str
) -> dict[str, Any]:
    """The review page's form as a final label: pairwise `choice` ("chosen:<id>", "tie" or "both_bad") and
    `strength`; ranking a rank (1 = best) per response; rating good or bad per response (`gens` names the
    responses the ranks and ratings belong to, in the form's order)."""
    label: dict[str, Any] = {"rewrite": rewrite or None}
    if kind == "pairwise":
        picked, _, chosen_id = choice.partition(":")
        if not picked:
            raise ReviewError("pick the better response, tie or both bad")
        label.update(choice=picked, chosen_id=chosen_id or None)
        if picked == "chosen":
            label["strength"] = int(strength) if strength.strip().isdigit() else strength
    elif kind == "ranking":
        if len(ranks) != len(gens) or not all(r.strip().isdigit() for r in ranks):
            raise ReviewError(f"give every response a rank, 1 (best) to {len(gens)}")
        by_rank = sorted(zip((int(r) for r in ranks), gens, strict=True))
        if [r for r, _ in by_rank] != list(range(1, len(gens) + 1)):
            raise ReviewError(f"each rank from 1 to {len(gens)} once")
        label["ranking"] = [g for _, g in by_rank]
    else:
        if len(ratings) != len(gens) or any(r not in ("good", "bad") for r in ratings):
            raise ReviewError("rate every response good or bad")
        label["ratings"] = dict(zip(gens, ratings, strict=True))
    return label


@dataclass(frozen=True)
class ReviewForm:
    """The review page's form fields, as text (see form_label)."""

    choice: str = ""
    strength: str = "2"
    gens: list[str] = field(default_factory=list)
    ranks: list[str] = field(default_factory=list)
    ratings: list[str] = field(default_factory=list)
    rewrite: str = ""
    note: str = ""


def adjudicate_form(session: Session, *, task_id: int, reviewer: User, form: ReviewForm) -> Adjudication:
    """`adjudicate` with the label the review page's form gives, in the task's kind."""
    task = session.get(Task, task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    label = form_label(
        task.kind,
        choice=form.choice,
        strength=form.strength,
        gens=form.gens,
        ranks=form.ranks,
        ratings=form.ratings,
        rewrite=form.rewrite,
    )
    return adjudicate(session, task_id=task_id, reviewer=reviewer, label=label, note=form.note)
