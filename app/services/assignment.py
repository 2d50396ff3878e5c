"""Who annotates what next: leases, fair order, overlap held exactly under concurrency, skips.

A task's slots are taken by human annotations (tasks.done_count) and unexpired leases. Every change that takes
a slot locks the task row first, so a count read while holding it stays true until commit:
- SQLite: the default engine begins IMMEDIATE transactions, so the whole read-then-write is serialized.
- PostgreSQL: SELECT ... FOR UPDATE (SKIP LOCKED while looking for a free task), then count again.
The annotator's own row is locked too (PostgreSQL), so two tabs or a double click never take two tasks.
"""
from __future__ import annotations

import fcntl
import os
import random
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from sqlalchemy import JSON, Boolean, Integer, String, Text, and_, bindparam, column, exists, select, text
from sqlalchemy.orm import Session

from app.models import Assignment, Task, UTCDateTime, utcnow

CANDIDATE_BATCH = 16
_shuffle = random.SystemRandom().shuffle


class Annotator(Protocol):
    """Who asks: a User row, or the API's lean token user; the services only need the id."""

    id: int


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


# The hot path runs prepared textual SQL: building ORM expressions and flushing the unit of work cost more than
# the queries themselves (measured: ~10x the time SQLite spends executing them).
_DT = UTCDateTime()
_NO = bindparam("no", value=False, type_=Boolean())


def prepared(statement: str, *, dates: tuple[str, ...] = ("now", "expires"), json_in: tuple[str, ...] = (),
         columns: dict[str, Any] | None = None):
    stmt = text(statement)
    named = set(re.findall(r":(\w+)", statement))
    binds = [bindparam(n, type_=_DT) for n in dates if n in named]
    binds += [bindparam(n, type_=JSON(none_as_null=True)) for n in json_in]
    if "no" in named:
        binds.append(_NO)
    stmt = stmt.bindparams(*binds)
    return stmt.columns(*(column(n, t) for n, t in columns.items())) if columns else stmt


LOCK_USER = prepared("SELECT id FROM users WHERE id = :user FOR UPDATE")
HELD = prepared("SELECT task_id, permutation, lease_expires_at FROM assignments WHERE user_id = :user AND "
            "status = 'leased' AND lease_expires_at > :now ORDER BY leased_at LIMIT 1",
            columns={"task_id": Integer(), "permutation": JSON(), "lease_expires_at": _DT})
TOP_PRIORITY = prepared("SELECT max(priority) FROM tasks WHERE completed = :no")
NEXT_PRIORITY = prepared("SELECT max(priority) FROM tasks WHERE completed = :no AND priority < :priority")
CANDIDATES = prepared(
    "SELECT t.id FROM tasks t WHERE t.completed = :no AND t.priority = :priority AND t.id > :after "
    "AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.task_id = t.id AND a.user_id = :user "
    "AND a.status IN ('done', 'skipped')) "
    "AND t.done_count + (SELECT count(*) FROM assignments l WHERE l.task_id = t.id AND l.status = 'leased' "
    f"AND l.lease_expires_at > :now) < t.overlap ORDER BY t.id LIMIT {CANDIDATE_BATCH}")
TASK_SLOTS = "SELECT done_count, overlap, completed FROM tasks WHERE id = :task"
TASK_SLOTS_SQLITE = prepared(TASK_SLOTS)  # the IMMEDIATE transaction already excludes other writers
TASK_SLOTS_SKIP_LOCKED = prepared(TASK_SLOTS + " FOR UPDATE SKIP LOCKED")
TASK_SLOTS_LOCKED = prepared(TASK_SLOTS + " FOR UPDATE")
OWN = prepared("SELECT id, status, permutation, lease_expires_at FROM assignments WHERE task_id = :task AND "
           "user_id = :user", columns={"id": Integer(), "status": String(), "permutation": JSON(),
                                       "lease_expires_at": _DT})
LEASED_BY_OTHERS = prepared("SELECT count(*) FROM assignments WHERE task_id = :task AND status = 'leased' AND "
                        "lease_expires_at > :now AND user_id <> :user")
POSITIONS = prepared("SELECT generation_id FROM task_positions WHERE task_id = :task ORDER BY position")
INSERT_LEASE = prepared("INSERT INTO assignments (task_id, user_id, status, permutation, leased_at, lease_expires_at, "
                    "updated_at) VALUES (:task, :user, 'leased', :permutation, :now, :expires, :now)",
                    json_in=("permutation",))
RENEW_LEASE = prepared("UPDATE assignments SET leased_at = :now, lease_expires_at = :expires, updated_at = :now "
                   "WHERE id = :id")
OFFER_TASK = prepared("SELECT t.kind, p.text, p.messages FROM tasks t JOIN prompts p ON p.id = t.prompt_id "
                  "WHERE t.id = :task", columns={"kind": String(), "text": Text(), "messages": JSON()})
OFFER_TEXTS = prepared("SELECT g.id, g.text FROM task_positions tp JOIN generations g ON g.id = tp.generation_id "
                       "WHERE tp.task_id = :task ORDER BY tp.position")
# One statement for "lease it": a new row with a fresh shuffle, or this annotator's expired lease renewed with the
# order they saw before (RETURNING gives whichever permutation the row now has).
UPSERT_LEASE = prepared(
    "INSERT INTO assignments (task_id, user_id, status, permutation, leased_at, lease_expires_at, updated_at) "
    "VALUES (:task, :user, 'leased', :permutation, :now, :expires, :now) ON CONFLICT (task_id, user_id) DO UPDATE "
    "SET leased_at = :now, lease_expires_at = :expires, updated_at = :now RETURNING permutation",
    json_in=("permutation",), columns={"permutation": JSON()})


def aware(value: datetime | None) -> datetime | None:
    """UTC-aware datetimes whatever the driver returns (SQLite gives naive UTC values back)."""
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


def is_sqlite(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def lock_user(session: Session, user_id: int) -> None:
    """Serialize one annotator's requests on PostgreSQL (SQLite already serializes every writer)."""
    if not is_sqlite(session):
        session.execute(LOCK_USER, {"user": user_id})


def task_slots(session: Session, task_id: int, *, skip_locked: bool = False):
    """(done_count, overlap, completed) of the task, its row locked until commit on PostgreSQL; None when
    skip_locked and another transaction holds it."""
    stmt = TASK_SLOTS_SQLITE if is_sqlite(session) else TASK_SLOTS_SKIP_LOCKED if skip_locked else TASK_SLOTS_LOCKED
    return session.execute(stmt, {"task": task_id}).first()


def lock_task(session: Session, task_id: int, *, skip_locked: bool = False) -> Task | None:
    """The task row as an ORM object, locked until commit (PostgreSQL; SQLite is already serialized)."""
    return session.execute(select(Task).where(Task.id == task_id).with_for_update(skip_locked=skip_locked)
                           .execution_options(populate_existing=True)).scalar_one_or_none()


def leased_count(session: Session, *, task_id: int, now: datetime, exclude_user_id: int) -> int:
    return session.execute(LEASED_BY_OTHERS, {"task": task_id, "now": now, "user": exclude_user_id}).scalar() or 0


@dataclass
class Lease:
    task_id: int
    permutation: list[int]
    lease_expires_at: datetime


def current_lease(session: Session, *, user_id: int, now: datetime) -> Lease | None:
    row = session.execute(HELD, {"user": user_id, "now": now}).first()
    return Lease(row[0], row[1], aware(row[2])) if row else None


def load_offer(session: Session, *, lease: Lease) -> Offer:
    kind, text_, messages = session.execute(OFFER_TASK, {"task": lease.task_id}).one()
    texts = dict(session.execute(OFFER_TEXTS, {"task": lease.task_id}).all())
    return Offer(task_id=lease.task_id, kind=kind, prompt_text=text_, prompt_messages=messages,
                 responses=[(g, texts[g]) for g in lease.permutation], lease_expires_at=aware(lease.lease_expires_at))


def _candidate_ids(session: Session, *, user_id: int, priority: int, after_id: int, now: datetime) -> list[int]:
    """Open tasks of one priority, oldest first, that this annotator has neither done nor skipped and that
    still have a free slot (human annotations + unexpired leases below overlap)."""
    return list(session.execute(CANDIDATES, {"priority": priority, "after": after_id, "user": user_id,
                                             "now": now}).scalars())


def _priorities(session: Session):
    """Open priorities, highest first: one index seek each (the queue index is (completed, priority, id))."""
    top = session.execute(TOP_PRIORITY).scalar()
    while top is not None:
        yield top
        top = session.execute(NEXT_PRIORITY, {"priority": top}).scalar()


def _lease_serialized(session: Session, *, task_id: int, user_id: int, now: datetime, expires: datetime) -> Offer:
    """SQLite: the candidate query just checked the slot inside this IMMEDIATE (serialized) transaction, so
    lease at once: texts, upsert, prompt -- three statements."""
    texts = session.execute(OFFER_TEXTS, {"task": task_id}).all()
    permutation = [g for g, _ in texts]
    _shuffle(permutation)
    permutation = session.execute(UPSERT_LEASE, {"task": task_id, "user": user_id, "permutation": permutation,
                                                 "now": now, "expires": expires}).scalar_one()
    kind, text_, messages = session.execute(OFFER_TASK, {"task": task_id}).one()
    by_id = dict(texts)
    return Offer(task_id=task_id, kind=kind, prompt_text=text_, prompt_messages=messages,
                 responses=[(g, by_id[g]) for g in permutation], lease_expires_at=expires)


def _try_lease(session: Session, *, task_id: int, user_id: int, now: datetime, expires: datetime,
               wait: bool = False) -> Lease | bool:
    """The new lease; False if the task has no slot for this annotator; True if another transaction holds
    the task row right now (PostgreSQL, when not waiting): worth another look before saying "nothing left".
    On PostgreSQL each try runs in a savepoint, so a rejected task's row lock is released at once: a request
    then holds at most one task lock while it waits for another, and waits can never form a cycle."""
    if is_sqlite(session):
        return _lease_locked(session, task_id=task_id, user_id=user_id, now=now, expires=expires, wait=wait)
    savepoint = session.begin_nested()
    got = _lease_locked(session, task_id=task_id, user_id=user_id, now=now, expires=expires, wait=wait)
    if isinstance(got, Lease):
        savepoint.commit()
    else:
        savepoint.rollback()
    return got


def _lease_locked(session: Session, *, task_id: int, user_id: int, now: datetime, expires: datetime,
                  wait: bool) -> Lease | bool:
    slots = task_slots(session, task_id, skip_locked=not wait)
    if slots is None:
        return True
    done_count, overlap, completed = slots
    if completed:
        return False
    own = session.execute(OWN, {"task": task_id, "user": user_id}).first()
    if own is not None and own.status != "leased":
        return False
    if done_count + leased_count(session, task_id=task_id, now=now, exclude_user_id=user_id) >= overlap:
        return False
    if own is None:
        permutation = list(session.execute(POSITIONS, {"task": task_id}).scalars())
        _shuffle(permutation)
        session.execute(INSERT_LEASE, {"task": task_id, "user": user_id, "permutation": permutation, "now": now,
                                       "expires": expires})
    else:
        # An expired lease of this annotator: take it again with the same order they saw before.
        permutation = own.permutation
        session.execute(RENEW_LEASE, {"id": own.id, "now": now, "expires": expires})
    return Lease(task_id, permutation, expires)


def next_task(session: Session, *, user: Annotator, lease_minutes: float, now: datetime | None = None) -> Offer | None:
    """The annotator's current task (a reload never takes a second one), else the next fair one, leased.
    None when nothing is left for them. The caller commits."""
    now = now or utcnow()
    lock_user(session, user.id)
    held = current_lease(session, user_id=user.id, now=now)
    if held is not None:
        return load_offer(session, lease=held)
    expires = now + timedelta(minutes=lease_minutes)
    contended: list[int] = []
    for priority in _priorities(session):
        after = 0
        while True:
            ids = _candidate_ids(session, user_id=user.id, priority=priority, after_id=after, now=now)
            if ids and is_sqlite(session):
                return _lease_serialized(session, task_id=ids[0], user_id=user.id, now=now, expires=expires)
            for task_id in ids:
                got = _try_lease(session, task_id=task_id, user_id=user.id, now=now, expires=expires)
                if isinstance(got, Lease):
                    return load_offer(session, lease=got)
                if got:
                    contended.append(task_id)
            if len(ids) < CANDIDATE_BATCH:
                break
            after = ids[-1]
    # Free tasks were all taken; those another request was holding a moment ago may still have a slot.
    for task_id in contended:
        got = _try_lease(session, task_id=task_id, user_id=user.id, now=now, expires=expires, wait=True)
        if isinstance(got, Lease):
            return load_offer(session, lease=got)
    return None


# ---- SQLite writer gate -------------------------------------------------------------------------------------
# SQLite has one writer at a time; a waiting connection polls with sleeps of up to 100 ms (busy_timeout), which
# under load costs far more than the few milliseconds a transaction holds the lock. The hot routes queue up here
# instead: a thread lock within the process plus an flock shared by every server process on the database file.
_gate_thread_lock = threading.Lock()
_gate_files: dict[tuple[int, str], Any] = {}


def _gate_file(path: str):
    key = (os.getpid(), path)  # a forked worker opens its own file: flock belongs to the open file
    if key not in _gate_files:
        _gate_files[key] = open(path, "a+b")  # noqa: SIM115 (kept open for the life of the process)
    return _gate_files[key]


@contextmanager
def sqlite_write_gate(database_path: str | None) -> Iterator[None]:
    """Serialize write transactions on a SQLite database across threads and processes (no-op for others)."""
    if not database_path:
        yield
        return
    with _gate_thread_lock:
        handle = _gate_file(database_path + ".write-gate")
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def skip_task(session: Session, *, user: Annotator, task_id: int, reason: str, now: datetime | None = None) -> Assignment:
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
