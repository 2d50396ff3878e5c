"""Human annotations: validate feedback against the task, submit idempotently, undo, and the annotator's progress.

Stored in terms of generation ids (chosen_id, ranking, ratings keys) with the positions the annotator saw.
tasks.done_count/completed change in the same transaction as the annotation (or its undo).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.annotate.statements import (
    BY_KEY,
    COUNT_DONE,
    INSERT_ANNOTATION,
    MARK_DONE,
    SUBMIT_STATE,
    TASK_RESPONSES_LOCKED,
    TASK_RESPONSES_SQLITE,
)
from app.inputs import storable_problem
from app.models import Annotation, Assignment, Task, utcnow
from app.services.assignment import (
    Annotator,
    AssignmentError,
    Db,
    aware,
    is_sqlite,
    leased_count,
    lock_task,
    lock_user,
    open_gold_filter,
    open_task_filter,
)
from app.services.errors import Conflict, ServiceError

CHOICES = ("chosen", "tie", "both_bad")
RATING_VALUES = ("good", "bad")
FLAGS = ("unsafe", "broken")
MAX_KEY_LENGTH = 128
MAX_TIME_SPENT_MS = 2**31 - 1  # the column is a 32-bit integer on PostgreSQL (24 days)


class AnnotationInvalid(ServiceError):
    """The feedback does not fit the task (HTTP 422); nothing is stored."""


class AnnotationConflict(Conflict):
    """Refused because of state (HTTP 409, or 404 for `status=404`): nothing is stored."""


class LeaseLost(AnnotationConflict):
    """The task takes no label from this annotator any more: their lease expired and other annotators filled it,
    or it was retired (HTTP 409). Nothing is stored; the page keeps the text for them to copy."""


@dataclass
class SubmitResult:
    annotation_id: int
    replayed: bool  # True: the same key and body were submitted before; nothing new was stored
    session: Db

    @property
    def annotation(self) -> Annotation:
        """The stored row (one more query: the hot path only needs the id); with an ORM Session only."""
        return self.session.get(Annotation, self.annotation_id)


def _text(value: Any, name: str, max_text_bytes: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise AnnotationInvalid(f"{name} must be a string")
    value = value.strip()
    problem = storable_problem(value)
    if problem:
        raise AnnotationInvalid(f"{name} {problem}")
    if len(value.encode("utf-8")) > max_text_bytes:
        raise AnnotationInvalid(f"{name} is longer than {max_text_bytes} bytes")
    return value or None


def _gen_id(value: Any, name: str, ids: set[int]) -> int:
    try:
        gid = int(value)
    except (TypeError, ValueError):
        raise AnnotationInvalid(f"{name} must be a response id") from None
    if isinstance(value, bool) or gid not in ids:
        raise AnnotationInvalid(f"{name} {value!r} is not one of this task's response ids {sorted(ids)}")
    return gid


def _ratings(value: Any, ids: set[int], *, required: bool) -> dict[str, str] | None:
    if value in (None, {}) and not required:
        return None
    if not isinstance(value, dict):
        raise AnnotationInvalid("ratings must be an object {response id: good|bad}")
    out = {}
    for key, rating in value.items():
        gid = _gen_id(key, "ratings key", ids)
        if rating not in RATING_VALUES:
            raise AnnotationInvalid(f"rating for response {gid} must be good or bad, not {rating!r}")
        out[str(gid)] = rating
    if required and len(out) != len(ids):
        missing = sorted(ids - {int(k) for k in out})
        raise AnnotationInvalid(f"rate every response good or bad: missing {missing}")
    return out


def validate_feedback(
    *, kind: str, response_ids: list[int], feedback: dict[str, Any], max_text_bytes: int
) -> dict[str, Any]:
    """The feedback for one task, checked against its kind and responses, normalized to stored fields."""
    ids = set(response_ids)
    out: dict[str, Any] = {"choice": None, "chosen_id": None, "strength": None, "ranking": None}
    choice, chosen_id, strength, ranking = (feedback.get(k) for k in ("choice", "chosen_id", "strength", "ranking"))
    if kind == "pairwise":
        if choice not in CHOICES:
            raise AnnotationInvalid("choice must be chosen, tie or both_bad for a pairwise task")
        if choice == "chosen":
            out["chosen_id"] = _gen_id(chosen_id, "chosen_id", ids)
            if isinstance(strength, bool) or strength not in (1, 2, 3):
                raise AnnotationInvalid(
                    "strength must be 1 (slightly), 2 (clearly) or 3 (much better) when a response is chosen"
                )
            out["strength"] = strength
        elif chosen_id is not None or strength is not None:
            raise AnnotationInvalid(f"chosen_id and strength only go with choice=chosen, not {choice}")
        out["choice"] = choice
    elif any(v is not None for v in (choice, chosen_id, strength)):
        raise AnnotationInvalid(f"choice, chosen_id and strength are for pairwise tasks, not {kind}")
    if kind == "ranking":
        if not isinstance(ranking, list) or len(ranking) != len(ids):
            raise AnnotationInvalid(f"ranking must list all {len(ids)} response ids, best first")
        ranked = [_gen_id(r, "ranking entry", ids) for r in ranking]
        if set(ranked) != ids:
            raise AnnotationInvalid("ranking must be a permutation of the task's response ids (each once)")
        out["ranking"] = ranked
    elif ranking is not None:
        raise AnnotationInvalid(f"ranking is for ranking tasks, not {kind}")
    out["ratings"] = _ratings(feedback.get("ratings"), ids, required=kind == "rating")

    critiques = feedback.get("critiques") or {}
    if not isinstance(critiques, dict):
        raise AnnotationInvalid("critiques must be an object {response id: text}")
    clean = {}
    for key, text in critiques.items():
        gid = _gen_id(key, "critiques key", ids)
        text = _text(text, f"critique of response {gid}", max_text_bytes)
        if text:
            clean[str(gid)] = text
    out["critiques"] = clean or None
    out["critique"] = _text(feedback.get("critique"), "critique", max_text_bytes)
    out["rewrite"] = _text(feedback.get("rewrite"), "rewrite", max_text_bytes)
    flags = feedback.get("flags") or []
    if not isinstance(flags, list) or any(f not in FLAGS for f in flags):
        raise AnnotationInvalid(f"flags must be a list of {', '.join(FLAGS)}")
    out["flags"] = sorted(set(flags)) or None
    return out


def request_hash(task_id: int, feedback: dict[str, Any]) -> str:
    """What a replay must match: the task and the normalized feedback (time spent is measurement, not answer)."""
    body = json.dumps({"task_id": task_id, **feedback}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def _replay(session: Db, *, user_id: int, key: str, task_id: int, digest: str | None) -> SubmitResult:
    """The answer to a key already used: the stored annotation when the body is the same (`digest`; None when the
    body was not checked against the task because the key names another task), else 409. Undone: 409 as well,
    so a replay never answers with a deleted annotation."""
    annotation_id, stored_hash, stored_task_id, deleted_at = session.execute(
        BY_KEY, {"user": user_id, "key": key}
    ).one()
    if stored_task_id != task_id or stored_hash != digest:
        raise AnnotationConflict(
            "this Idempotency-Key was already used with a different body "
            f"(annotation {annotation_id}); use a fresh key for a new annotation"
        )
    if deleted_at is not None:
        raise AnnotationConflict(
            f"annotation {annotation_id}, stored under this Idempotency-Key, was undone; "
            "use a fresh key to annotate the task again"
        )
    return SubmitResult(annotation_id=annotation_id, replayed=True, session=session)


def submit_annotation(
    session: Db,
    *,
    user: Annotator,
    task_id: int,
    feedback: dict[str, Any],
    idempotency_key: str,
    max_text_bytes: int,
    time_spent_ms: int | None = None,
    guideline_version_id: int | None = None,
    now: datetime | None = None,
) -> SubmitResult:
    """Store one human annotation for a task assigned to this annotator, or replay the first one stored under
    this key. Raises AnnotationInvalid (422) or AnnotationConflict (409/404; LeaseLost when the task no longer takes
    the label); nothing stored then. The caller commits. A handful of indexed statements (this is the hot path).
    `guideline_version_id`: the guidelines the annotator was shown; recorded when it is a version of the task's
    batch or of the project, else the version in force is."""
    now = now or utcnow()
    key = (idempotency_key or "").strip()
    if not key or len(key) > MAX_KEY_LENGTH:
        raise AnnotationInvalid(f"an idempotency key of 1..{MAX_KEY_LENGTH} characters is required")
    if time_spent_ms is not None and (
        isinstance(time_spent_ms, bool)
        or not isinstance(time_spent_ms, int)
        or not 0 <= time_spent_ms <= MAX_TIME_SPENT_MS
    ):
        raise AnnotationInvalid(f"time_spent_ms must be an integer 0..{MAX_TIME_SPENT_MS}")
    rows = session.execute(
        TASK_RESPONSES_SQLITE if is_sqlite(session) else TASK_RESPONSES_LOCKED, {"task": task_id}
    ).all()
    if not rows:
        raise AnnotationConflict(f"task {task_id} does not exist", status=404)
    state = session.execute(SUBMIT_STATE, {"user": user.id, "key": key, "task": task_id}).one()
    # The task's kind and responses are checked (and named in errors) only for a task that is this annotator's.
    if state.assignment_id is None:
        if state.key_id is not None:
            return _replay(session, user_id=user.id, key=key, task_id=task_id, digest=None)
        raise AnnotationConflict(f"task {task_id} is not assigned to you: ask for the next task first")
    task_kind, done_count, overlap, _, gold, retired_at, batch = rows[0]
    clean = validate_feedback(
        kind=task_kind, response_ids=[r[3] for r in rows], feedback=feedback, max_text_bytes=max_text_bytes
    )
    digest = request_hash(task_id, clean)
    if state.key_id is not None:
        return _replay(session, user_id=user.id, key=key, task_id=task_id, digest=digest)
    if state.status == "done":
        raise AnnotationConflict(f"you already annotated task {task_id} (undo it first to change it)")
    if state.status == "skipped":
        raise AnnotationConflict(f"you skipped task {task_id}")
    if retired_at is not None:
        raise LeaseLost(
            f"task {task_id} was retired while you worked on it: it needs no more labels; "
            "your annotation was not stored"
        )
    # A late submit (lease expired) is still welcome if a slot is free; never beyond the overlap. A gold task has
    # no slots (each annotator may do it): answered as any task with a free slot, so nothing tells it apart.
    taken = done_count
    if aware(state.lease_expires_at) <= now and not gold:
        taken += leased_count(session, task_id=task_id, now=now, exclude_user_id=user.id)
    if taken >= overlap and not gold:
        meanwhile = "completed" if done_count >= overlap else "taken"
        raise LeaseLost(
            f"your lease on task {task_id} expired and the task has meanwhile been {meanwhile} "
            "by other annotators; your annotation was not stored"
        )
    values = {
        "task_id": task_id,
        "user_id": user.id,
        "source": "human",
        "kind": task_kind,
        "positions": list(state.permutation),
        "time_spent_ms": time_spent_ms,
        "idempotency_key": key,
        "request_hash": digest,
        "meta": {},
        "created_at": now,
        "guideline": guideline_version_id,
        "batch": batch,
        **clean,
    }
    try:
        annotation_id = session.execute(INSERT_ANNOTATION, values).scalar_one()
    except IntegrityError:
        # The same key used at the same moment on another task (the task lock serializes everything else):
        # answer like a replay of whichever came first.
        session.rollback()
        if session.execute(BY_KEY, {"user": user.id, "key": key}).first() is None:
            raise AnnotationConflict(f"task {task_id} was annotated by you at the same moment") from None
        return _replay(session, user_id=user.id, key=key, task_id=task_id, digest=digest)
    session.execute(MARK_DONE, {"id": state.assignment_id, "now": now})
    session.execute(COUNT_DONE, {"task": task_id})
    return SubmitResult(annotation_id=annotation_id, replayed=False, session=session)


def undo_annotation(
    session: Session,
    *,
    user: Annotator,
    annotation_id: int,
    undo_minutes: float,
    lease_minutes: float,
    now: datetime | None = None,
) -> Annotation:
    """Soft-delete one of the annotator's own recent annotations; the task is theirs (leased) again. Flushes."""
    now = now or utcnow()
    lock_user(session, user.id)
    annotation = session.get(Annotation, annotation_id, populate_existing=True)
    if annotation is None or annotation.user_id != user.id or annotation.source != "human":
        raise AnnotationConflict(f"annotation {annotation_id} not found among yours", status=404)
    if annotation.deleted_at is not None:
        raise AnnotationConflict(f"annotation {annotation_id} was already undone")
    if aware(annotation.created_at) < now - timedelta(minutes=undo_minutes):
        raise AnnotationConflict(
            f"annotation {annotation_id} is older than {undo_minutes:g} minutes: it can no longer be undone"
        )
    task = lock_task(session, annotation.task_id)
    assert task is not None
    annotation.deleted_at = now
    task.done_count = max(0, task.done_count - 1)
    task.completed = task.done_count >= task.overlap
    assignment = session.scalars(
        select(Assignment).where(Assignment.task_id == task.id, Assignment.user_id == user.id)
    ).first()
    # The freed slot goes back to this annotator at once (a lease), so "undo" means "let me redo it".
    if assignment is not None:
        assignment.status, assignment.leased_at = "leased", now
        assignment.lease_expires_at = now + timedelta(minutes=lease_minutes)
    session.flush()
    return annotation


def list_my_annotations(
    session: Session, *, user_id: int, limit: int = 50, offset: int = 0, include_deleted: bool = True
) -> list[Annotation]:
    query = select(Annotation).where(Annotation.user_id == user_id, Annotation.source == "human")
    if not include_deleted:
        query = query.where(Annotation.deleted_at.is_(None))
    return list(session.scalars(query.order_by(Annotation.id.desc()).limit(limit).offset(offset)))


@dataclass
class Progress:
    today: int
    total: int
    remaining: int


def my_progress(session: Session, *, user_id: int, now: datetime | None = None) -> Progress:
    """Annotations today (UTC) and in total (undone ones excluded), and tasks still open to this annotator (regular
    ones, plus the gold tasks that may still be mixed in while regular ones remain)."""
    now = now or utcnow()
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    mine = (Annotation.user_id == user_id, Annotation.source == "human", Annotation.deleted_at.is_(None))
    total, today = session.execute(
        select(func.count(Annotation.id), func.count(Annotation.id).filter(Annotation.created_at >= day)).where(*mine)
    ).one()
    remaining = session.scalar(select(func.count(Task.id)).where(open_task_filter(user_id))) or 0
    if remaining:
        # Gold tasks still to come count too, so "remaining" drops by one after a gold task as after any other
        # (and reads 0 when the regular queue is empty: gold alone never keeps an annotator busy).
        remaining += session.scalar(select(func.count(Task.id)).where(open_gold_filter(user_id))) or 0
    return Progress(today=today, total=total, remaining=remaining)


def annotation_json(a: Annotation) -> dict[str, Any]:
    return {
        "annotation_id": a.id,
        "task_id": a.task_id,
        "kind": a.kind,
        "choice": a.choice,
        "chosen_id": a.chosen_id,
        "strength": a.strength,
        "ranking": a.ranking,
        "ratings": a.ratings,
        "critiques": a.critiques,
        "critique": a.critique,
        "rewrite": a.rewrite,
        "flags": a.flags,
        "positions": a.positions,
        "time_spent_ms": a.time_spent_ms,
        "guideline_version_id": a.guideline_version_id,
        "created_at": aware(a.created_at).isoformat(),
        "deleted_at": aware(a.deleted_at).isoformat() if a.deleted_at else None,
    }


__all__ = [
    "AnnotationConflict",
    "AnnotationInvalid",
    "AssignmentError",
    "LeaseLost",
    "SubmitResult",
    "submit_annotation",
    "undo_annotation",
    "validate_feedback",
    "my_progress",
    "list_my_annotations",
    "annotation_json",
]
