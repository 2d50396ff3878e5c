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
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, and_, exists, select
from sqlalchemy.orm import Session

from app.annotate.statements import (
    CANDIDATE_LOCKED,
    CANDIDATES,
    GOLD_CANDIDATE,
    HELD,
    LEASED_BY_OTHERS,
    LOCK_USER,
    LOCK_USER_LEASE_ASYNC,
    NEXT_PRIORITY,
    OFFER,
    QUALIFICATION_STATUS,
    SLOT_CHECK,
    TASK_SLOTS_LOCKED,
    TASK_SLOTS_SQLITE,
    TOP_PRIORITY,
    UPSERT_LEASE,
)
from app.models import Assignment, GoldAnswer, Task, utcnow
from app.services.errors import Conflict
from app.services.gold import QualificationFailed, failed_message, grade_qualification

_random = random.SystemRandom()
_shuffle = _random.shuffle


# The prepared-SQL services (next_task, submit_annotation) run on an ORM Session (pages, CLI, tests) or on a Core
# Connection (the annotate API, which spares the Session's bookkeeping on every statement).
Db = Session | Connection


class Annotator(Protocol):
    """Who asks: a User row, or the API's lean token user; the services only need the id and the role."""

    id: int
    role: str


class AssignmentError(Conflict):
    """A request that does not fit the annotator's assignment (409 unless it says otherwise)."""


@dataclass
class Offer:
    """A task as one annotator sees it: responses in their shuffled order (generation ids + texts)."""

    task_id: int
    kind: str
    prompt_text: str | None
    prompt_messages: list[dict[str, str]] | None
    responses: list[tuple[int, str]]
    lease_expires_at: datetime
    guideline_version_id: int | None = None  # the guidelines in force for the task (app.services.guidelines)

    @property
    def prompt(self) -> Any:
        return self.prompt_text if self.prompt_messages is None else self.prompt_messages


def aware(value: datetime | None) -> datetime | None:
    """UTC-aware datetimes whatever the driver returns (SQLite gives naive UTC values back)."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def is_sqlite(session: Db) -> bool:
    bind = session if isinstance(session, Connection) else session.get_bind()
    return bind.dialect.name == "sqlite"


def lock_user(session: Session, user_id: int) -> None:
    """Serialize one annotator's requests on PostgreSQL (SQLite already serializes every writer)."""
    if not is_sqlite(session):
        session.execute(LOCK_USER, {"user": user_id})


def task_slots(session: Db, task_id: int):
    """(done_count, overlap, completed) of the task, its row locked until commit on PostgreSQL."""
    stmt = TASK_SLOTS_SQLITE if is_sqlite(session) else TASK_SLOTS_LOCKED
    return session.execute(stmt, {"task": task_id}).first()


def lock_task(session: Session, task_id: int, *, skip_locked: bool = False) -> Task | None:
    """The task row as an ORM object, locked until commit (PostgreSQL; SQLite is already serialized)."""
    return session.execute(
        select(Task)
        .where(Task.id == task_id)
        .with_for_update(skip_locked=skip_locked)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def leased_count(session: Db, *, task_id: int, now: datetime, exclude_user_id: int) -> int:
    return session.execute(LEASED_BY_OTHERS, {"task": task_id, "now": now, "user": exclude_user_id}).scalar() or 0


@dataclass
class Lease:
    task_id: int
    permutation: list[int]
    lease_expires_at: datetime


def current_lease(session: Db, *, user_id: int, now: datetime) -> Lease | None:
    row = session.execute(HELD, {"user": user_id, "now": now}).first()
    return Lease(row[0], row[1], aware(row[2])) if row else None


def _offer(task_id: int, rows, permutation: list[int], expires: datetime) -> Offer:
    texts = {r[0]: r[1] for r in rows}
    return Offer(
        task_id=task_id,
        kind=rows[0][2],
        prompt_text=rows[0][3],
        prompt_messages=rows[0][4],
        responses=[(g, texts[g]) for g in permutation],
        lease_expires_at=aware(expires),
        guideline_version_id=rows[0][5],
    )


def load_offer(session: Db, *, lease: Lease) -> Offer:
    rows = session.execute(OFFER, {"task": lease.task_id}).all()
    return _offer(lease.task_id, rows, lease.permutation, lease.lease_expires_at)


def _candidate_ids(session: Db, *, user_id: int, priority: int, after_id: int, now: datetime) -> list[int]:
    """Open tasks of one priority, oldest first, that this annotator has neither done nor skipped and that
    still have a free slot (human annotations + unexpired leases below overlap)."""
    return list(
        session.execute(CANDIDATES, {"priority": priority, "after": after_id, "user": user_id, "now": now}).scalars()
    )


def _priorities(session: Db):
    """Open priorities, highest first: one index seek each (the queue index is (completed, priority, id))."""
    top = session.execute(TOP_PRIORITY).scalar()
    while top is not None:
        yield top
        top = session.execute(NEXT_PRIORITY, {"priority": top}).scalar()


def _lease_checked(session: Db, *, task_id: int, user_id: int, now: datetime, expires: datetime) -> Offer:
    """Lease a task whose free slot was just checked with no other writer able to take it (SQLite: inside the
    IMMEDIATE transaction; PostgreSQL: holding the task's row lock): texts, upsert, prompt."""
    rows = session.execute(OFFER, {"task": task_id}).all()
    permutation = [r[0] for r in rows]
    _shuffle(permutation)
    permutation = session.execute(
        UPSERT_LEASE, {"task": task_id, "user": user_id, "permutation": permutation, "now": now, "expires": expires}
    ).scalar_one()
    return _offer(task_id, rows, permutation, expires)


def _slot_free(session: Db, *, task_id: int, user_id: int, now: datetime) -> bool:
    """Re-check, holding the task's lock, that it still has a slot for this annotator."""
    done, overlap, completed, leased_by_others, own_status = session.execute(
        SLOT_CHECK, {"task": task_id, "user": user_id, "now": now}
    ).one()
    return not completed and own_status in (None, "leased") and done + leased_by_others < overlap


def _lease_by_locking(session: Db, *, user_id: int, now: datetime, expires: datetime) -> Offer | None:
    """PostgreSQL: lock the first free-looking task (SKIP LOCKED: others are busy with theirs), re-check, lease.
    None when the scan finds nothing; the task locks it took stay held until the caller ends the transaction."""
    for priority in _priorities(session):
        after = 0
        while (
            task_id := session.execute(
                CANDIDATE_LOCKED, {"priority": priority, "after": after, "user": user_id, "now": now}
            ).scalar()
        ) is not None:
            if _slot_free(session, task_id=task_id, user_id=user_id, now=now):
                return _lease_checked(session, task_id=task_id, user_id=user_id, expires=expires, now=now)
            after = task_id
    return None


def _lease_by_waiting(session: Db, *, user_id: int, now: datetime, expires: datetime) -> Offer | None:
    """PostgreSQL, in a fresh transaction holding no task lock: wait in turn for tasks that looked free but were
    locked a moment ago (each try in a savepoint, so a rejected task's lock is let go before the next wait and
    waits never form a cycle)."""
    for priority in _priorities(session):
        for task_id in _candidate_ids(session, user_id=user_id, priority=priority, after_id=0, now=now):
            attempt = session.begin_nested()
            task_slots(session, task_id)  # waits for the holder to commit
            if _slot_free(session, task_id=task_id, user_id=user_id, now=now):
                offer = _lease_checked(session, task_id=task_id, user_id=user_id, expires=expires, now=now)
                attempt.commit()
                return offer
            attempt.rollback()
    return None


def _gold_offer(session: Db, *, user_id: int, qualification: bool, now: datetime, expires: datetime) -> Offer | None:
    """Lease a gold task this annotator has not done (app.services.gold), or None. Gold tasks have no slot limit,
    so nothing but the annotator's own lock is needed."""
    task_id = session.execute(GOLD_CANDIDATE, {"qualification": qualification, "user": user_id}).scalar()
    if task_id is None:
        return None
    return _lease_checked(session, task_id=task_id, user_id=user_id, now=now, expires=expires)


def _qualifying(session: Db, *, user: Annotator, threshold: float | None) -> str | None:
    """The annotator's qualification status when they must qualify ("none": not yet graded), else None.
    A failed annotator is refused (QualificationFailed, 403)."""
    if threshold is None or getattr(user, "role", "annotator") != "annotator":
        return None
    status = session.execute(QUALIFICATION_STATUS, {"user": user.id}).scalar()
    if status == "failed":
        raise QualificationFailed(failed_message(session, user_id=user.id))
    return "none" if status is None else None


def _before_regular(
    session: Db, *, user: Annotator, qualifying: bool, gold_drawn: bool, threshold: float | None, now, expires
) -> Offer | None:
    """What comes before the regular queue: the qualification set for one not yet graded (graded when it is
    done: failing ends the request with 403, the grade kept), then a gold task when the draw says so."""
    if qualifying:
        offer = _gold_offer(session, user_id=user.id, qualification=True, now=now, expires=expires)
        if offer is not None:
            return offer
        if grade_qualification(session, user_id=user.id, threshold=threshold, now=now) == "failed":
            message = failed_message(session, user_id=user.id)
            session.commit()  # the grade is kept; the refusal below rolls back nothing
            raise QualificationFailed(message)
    if gold_drawn:
        return _gold_offer(session, user_id=user.id, qualification=False, now=now, expires=expires)
    return None


def next_task(
    session: Db,
    *,
    user: Annotator,
    lease_minutes: float,
    gold_rate: float = 0.0,
    qualification_threshold: float | None = None,
    now: datetime | None = None,
) -> Offer | None:
    """The annotator's current task (a reload never takes a second one), else the next fair one, leased.
    None when nothing is left for them. The caller commits.

    With `qualification_threshold` (qualification required), an annotator first works the qualification set and
    is refused (QualificationFailed) once they failed it. A new lease is a gold task they have not seen with
    probability `gold_rate` (one random draw; no query unless it says gold)."""
    now = now or utcnow()
    expires = now + timedelta(minutes=lease_minutes)
    gold_drawn = gold_rate > 0 and _random.random() < gold_rate
    extra = {"user": user, "gold_drawn": gold_drawn, "threshold": qualification_threshold}
    if is_sqlite(session):
        extra["qualifying"] = _qualifying(session, user=user, threshold=qualification_threshold) == "none"
        # This IMMEDIATE transaction excludes every other writer: the first candidate is free for sure.
        held = current_lease(session, user_id=user.id, now=now)
        if held is not None:
            return load_offer(session, lease=held)
        if (offer := _before_regular(session, now=now, expires=expires, **extra)) is not None:
            return offer
        for priority in _priorities(session):
            ids = _candidate_ids(session, user_id=user.id, priority=priority, after_id=0, now=now)
            if ids:
                return _lease_checked(session, task_id=ids[0], user_id=user.id, now=now, expires=expires)
        return None
    for lease in (_lease_by_locking, _lease_by_waiting):
        session.execute(LOCK_USER_LEASE_ASYNC, {"user": user.id})
        # Read after the lock: the latest lease and grade (two requests never grade at once).
        extra["qualifying"] = _qualifying(session, user=user, threshold=qualification_threshold) == "none"
        held = current_lease(session, user_id=user.id, now=now)
        if held is not None:
            return load_offer(session, lease=held)
        if (offer := _before_regular(session, now=now, expires=expires, **extra)) is not None:
            return offer
        offer = lease(session, user_id=user.id, now=now, expires=expires)
        if offer is not None:
            return offer
        session.rollback()  # lets go of the rejected tasks' locks before waiting for any
    return None


def skip_task(
    session: Session, *, user: Annotator, task_id: int, reason: str, now: datetime | None = None
) -> Assignment:
    """Record the reason, free the slot; the task is never offered to this annotator again."""
    now = now or utcnow()
    reason = (reason or "").strip()
    if not reason:
        raise AssignmentError("give a reason for skipping", status=422)
    if len(reason) > 1000:
        raise AssignmentError("the skip reason is longer than 1000 characters", status=422)
    lock_user(session, user.id)
    assignment = session.scalars(
        select(Assignment).where(Assignment.task_id == task_id, Assignment.user_id == user.id)
    ).first()
    if assignment is None:
        raise AssignmentError(f"task {task_id} is not assigned to you: ask for the next task first", status=404)
    if assignment.status == "done":
        raise AssignmentError(f"you already annotated task {task_id}; undo it first to skip it")
    if assignment.status != "skipped":
        assignment.status, assignment.skip_reason = "skipped", reason
        assignment.lease_expires_at = now
        session.flush()
    return assignment


def renew_lease(
    session: Session, *, user: Annotator, task_id: int, lease_minutes: float, now: datetime | None = None
) -> Lease:
    """Extend the annotator's lease on a task while they work on it (the annotate page calls this on activity).
    A lease that already expired is taken again when the task still has a slot for them. Refusals say why, so the
    page can tell the annotator to copy their text: AssignmentError 404 (not theirs) or 409. The caller commits."""
    now = now or utcnow()
    lock_user(session, user.id)
    assignment = session.scalars(
        select(Assignment).where(Assignment.task_id == task_id, Assignment.user_id == user.id)
    ).first()
    if assignment is None:
        raise AssignmentError(f"task {task_id} is not assigned to you: ask for the next task first", status=404)
    if assignment.status != "leased":
        raise AssignmentError(f"you already {'annotated' if assignment.status == 'done' else 'skipped'} task {task_id}")
    task = lock_task(session, task_id)
    assert task is not None  # an assignment's task is never deleted while it exists (cascade)
    if task.retired_at is not None:
        raise AssignmentError(f"task {task_id} was retired: it needs no more labels")
    if aware(assignment.lease_expires_at) <= now and (
        task.completed
        or task.done_count + leased_count(session, task_id=task_id, now=now, exclude_user_id=user.id) >= task.overlap
    ):
        raise AssignmentError(
            f"your lease on task {task_id} expired and other annotators have taken its remaining slots"
        )
    assignment.lease_expires_at = now + timedelta(minutes=lease_minutes)
    session.flush()
    return Lease(task_id, list(assignment.permutation), aware(assignment.lease_expires_at))


def open_task_filter(user_id: int):
    """Tasks still open to this annotator in the regular queue (not completed, retired nor gold, neither done nor
    skipped by them)."""
    return and_(Task.completed.is_(False), Task.gold.is_(False), Task.retired_at.is_(None), ~_finished(user_id))


def open_gold_filter(user_id: int):
    """Gold tasks that may still be mixed into this annotator's queue (not retired, neither done nor skipped)."""
    mixed = exists().where(GoldAnswer.task_id == Task.id, GoldAnswer.qualification.is_(False))
    return and_(Task.gold.is_(True), Task.retired_at.is_(None), mixed, ~_finished(user_id))


def _finished(user_id: int):
    return exists().where(
        Assignment.task_id == Task.id, Assignment.user_id == user_id, Assignment.status.in_(("done", "skipped"))
    )
