"""Who annotates what next: leases, fair order, overlap held exactly under concurrency, skips.

A task's slots are taken by human annotations (tasks.done_count) and unexpired leases. Every change that takes
a slot locks the task row first, so a count read while holding it stays true until commit:
- SQLite: the default engine begins IMMEDIATE transactions, so the whole read-then-write is serialized.
- PostgreSQL: SELECT ... FOR UPDATE (SKIP LOCKED while looking for a free task), then count again.
The annotator's own row is locked too (PostgreSQL), so two tabs or a double click never take two tasks.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session

from app.models import Assignment, Generation, Prompt, Task, TaskPosition, User, utcnow

CANDIDATE_BATCH = 16
_shuffle = random.SystemRandom().shuffle


class AssignmentError(Exception):
    """A request that does not fit the annotator's assignment; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Offer:
    """A task as one annotator sees it: responses in their shuffled order (generation ids + texts)."""

    task_id: int
    kind: str
    prompt_text: str | None
    prompt_messages: list[dict[str, str]] | None
    responses: list[tuple[int, str]]
    lease_expires_at: datetime

    @property
    def prompt(self) -> Any:
        return self.prompt_text if self.prompt_messages is None else self.prompt_messages


def aware(value: datetime | None) -> datetime | None:
    """UTC-aware datetimes whatever the driver returns (SQLite gives naive UTC values back)."""
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


def lock_user(session: Session, user_id: int) -> None:
    """Serialize one annotator's requests on PostgreSQL (SQLite already serializes every writer)."""
    if session.get_bind().dialect.name != "sqlite":
        session.execute(select(User.id).where(User.id == user_id).with_for_update())


def lock_task(session: Session, task_id: int, *, skip_locked: bool = False) -> Task | None:
    """The task row, locked until commit (PostgreSQL; SQLite ignores FOR UPDATE and is already serialized)."""
    row = session.execute(select(Task).where(Task.id == task_id)
                          .with_for_update(skip_locked=skip_locked)
                          .execution_options(populate_existing=True)).scalar_one_or_none()
    return row


def leased_count(session: Session, *, task_id: int, now: datetime, exclude_user_id: int | None = None) -> int:
    query = select(func.count()).select_from(Assignment).where(
        Assignment.task_id == task_id, Assignment.status == "leased", Assignment.lease_expires_at > now)
    if exclude_user_id is not None:
        query = query.where(Assignment.user_id != exclude_user_id)
    return session.scalar(query) or 0


def current_lease(session: Session, *, user_id: int, now: datetime) -> Assignment | None:
    return session.scalars(
        select(Assignment).where(Assignment.user_id == user_id, Assignment.status == "leased",
                                 Assignment.lease_expires_at > now)
        .order_by(Assignment.leased_at).limit(1)).first()


def load_offer(session: Session, *, assignment: Assignment) -> Offer:
    kind, text, messages = session.execute(
        select(Task.kind, Prompt.text, Prompt.messages).join(Prompt, Prompt.id == Task.prompt_id)
        .where(Task.id == assignment.task_id)).one()
    texts = dict(session.execute(select(Generation.id, Generation.text)
                                 .where(Generation.id.in_(assignment.permutation))).all())
    return Offer(task_id=assignment.task_id, kind=kind, prompt_text=text, prompt_messages=messages,
                 responses=[(g, texts[g]) for g in assignment.permutation],
                 lease_expires_at=aware(assignment.lease_expires_at))


def _candidate_ids(session: Session, *, user_id: int, priority: int, after_id: int, now: datetime) -> list[int]:
    """Open tasks of one priority, oldest first, that this annotator has neither done nor skipped and that
    still have a free slot (human annotations + unexpired leases below overlap)."""
    leased = (select(func.count()).select_from(Assignment)
              .where(Assignment.task_id == Task.id, Assignment.status == "leased", Assignment.lease_expires_at > now)
              .scalar_subquery())
    mine = exists().where(Assignment.task_id == Task.id, Assignment.user_id == user_id,
                          Assignment.status.in_(("done", "skipped")))
    return list(session.scalars(
        select(Task.id).where(Task.completed.is_(False), Task.priority == priority, Task.id > after_id, ~mine,
                              Task.done_count + leased < Task.overlap)
        .order_by(Task.id).limit(CANDIDATE_BATCH)))


def _priorities(session: Session):
    """Open priorities, highest first: one index seek each (the queue index is (completed, priority, id))."""
    top = session.scalar(select(func.max(Task.priority)).where(Task.completed.is_(False)))
    while top is not None:
        yield top
        top = session.scalar(select(func.max(Task.priority)).where(Task.completed.is_(False), Task.priority < top))


def _try_lease(session: Session, *, task_id: int, user_id: int, now: datetime, expires: datetime,
               wait: bool = False) -> Assignment | bool:
    """The new lease; False if the task has no slot for this annotator; True if another transaction holds
    the task row right now (PostgreSQL, when not waiting): worth another look before saying "nothing left".
    On PostgreSQL each try runs in a savepoint, so a rejected task's row lock is released at once: a request
    then holds at most one task lock while it waits for another, and waits can never form a cycle."""
    if session.get_bind().dialect.name == "sqlite":
        return _lease_locked(session, task_id=task_id, user_id=user_id, now=now, expires=expires, wait=wait)
    savepoint = session.begin_nested()
    got = _lease_locked(session, task_id=task_id, user_id=user_id, now=now, expires=expires, wait=wait)
    if isinstance(got, Assignment):
        savepoint.commit()
    else:
        savepoint.rollback()
    return got


def _lease_locked(session: Session, *, task_id: int, user_id: int, now: datetime, expires: datetime,
                  wait: bool) -> Assignment | bool:
    task = lock_task(session, task_id, skip_locked=not wait)
    if task is None:
        return True
    if task.completed:
        return False
    own = session.scalars(select(Assignment).where(Assignment.task_id == task_id, Assignment.user_id == user_id)
                          .execution_options(populate_existing=True)).first()
    if own is not None and own.status != "leased":
        return False
    if task.done_count + leased_count(session, task_id=task_id, now=now, exclude_user_id=user_id) >= task.overlap:
        return False
    if own is None:
        permutation = list(session.scalars(select(TaskPosition.generation_id)
                                           .where(TaskPosition.task_id == task_id).order_by(TaskPosition.position)))
        _shuffle(permutation)
        own = Assignment(task_id=task_id, user_id=user_id, status="leased", permutation=permutation,
                         leased_at=now, lease_expires_at=expires)
        session.add(own)
    else:
        # An expired lease of this annotator: take it again with the same order they saw before.
        own.leased_at, own.lease_expires_at = now, expires
    session.flush()
    return own


def next_task(session: Session, *, user: User, lease_minutes: float, now: datetime | None = None) -> Offer | None:
    """The annotator's current task (a reload never takes a second one), else the next fair one, leased.
    None when nothing is left for them. Flushes; the caller commits."""
    now = now or utcnow()
    lock_user(session, user.id)
    held = current_lease(session, user_id=user.id, now=now)
    if held is not None:
        return load_offer(session, assignment=held)
    expires = now + timedelta(minutes=lease_minutes)
    contended: list[int] = []
    for priority in _priorities(session):
        after = 0
        while True:
            ids = _candidate_ids(session, user_id=user.id, priority=priority, after_id=after, now=now)
            for task_id in ids:
                got = _try_lease(session, task_id=task_id, user_id=user.id, now=now, expires=expires)
                if isinstance(got, Assignment):
                    return load_offer(session, assignment=got)
                if got:
                    contended.append(task_id)
            if len(ids) < CANDIDATE_BATCH:
                break
            after = ids[-1]
    # Free tasks were all taken; those another request was holding a moment ago may still have a slot.
    for task_id in contended:
        got = _try_lease(session, task_id=task_id, user_id=user.id, now=now, expires=expires, wait=True)
        if isinstance(got, Assignment):
            return load_offer(session, assignment=got)
    return None


def skip_task(session: Session, *, user: User, task_id: int, reason: str, now: datetime | None = None) -> Assignment:
    """Record the reason, free the slot; the task is never offered to this annotator again."""
    now = now or utcnow()
    reason = (reason or "").strip()
    if not reason:
        raise AssignmentError("give a reason for skipping", status=422)
    if len(reason) > 1000:
        raise AssignmentError("the skip reason is longer than 1000 characters", status=422)
    lock_user(session, user.id)
    assignment = session.scalars(select(Assignment).where(Assignment.task_id == task_id,
                                                          Assignment.user_id == user.id)).first()
    if assignment is None:
        raise AssignmentError(f"task {task_id} is not assigned to you: ask for the next task first", status=404)
    if assignment.status == "done":
        raise AssignmentError(f"you already annotated task {task_id}; undo it first to skip it")
    if assignment.status != "skipped":
        assignment.status, assignment.skip_reason = "skipped", reason
        assignment.lease_expires_at = now
        session.flush()
    return assignment


def open_task_filter(user_id: int):
    """Tasks still open to this annotator (not completed, neither done nor skipped by them)."""
    mine = exists().where(Assignment.task_id == Task.id, Assignment.user_id == user_id,
                          Assignment.status.in_(("done", "skipped")))
    return and_(Task.completed.is_(False), ~mine)
