"""Assignment: held lease first, priority then age, overlap with leases, expiry, skips, and 32-thread races."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.models import Annotation, Assignment, Task, TaskPosition, utcnow
from app.services.annotations import AnnotationConflict, submit_annotation
from app.services.assignment import AssignmentError, next_task, skip_task
from tests.conftest import BACKENDS
from tests.factories import make_annotators, make_tasks, task_line


def _next(db, user, **kw):
    offer = next_task(db, user=user, lease_minutes=10, **kw)
    db.commit()
    return offer


def _annotate(db, user, offer, key=None):
    result = submit_annotation(
        db,
        user=user,
        task_id=offer.task_id,
        feedback={"choice": "tie"}
        if offer.kind == "pairwise"
        else {"ranking": [g for g, _ in offer.responses]}
        if offer.kind == "ranking"
        else {"ratings": {str(g): "good" for g, _ in offer.responses}},
        idempotency_key=key or uuid.uuid4().hex,
        max_text_bytes=65536,
    )
    db.commit()
    return result.annotation


def test_reload_returns_the_held_lease_never_a_second_task(db, make_user):
    make_tasks(db, task_line(), task_line())
    user = make_user()
    first = _next(db, user)
    assert _next(db, user).task_id == first.task_id
    assert [r[0] for r in _next(db, user).responses] == [r[0] for r in first.responses]
    assert db.scalar(select(func.count()).select_from(Assignment).where(Assignment.user_id == user.id)) == 1


def test_highest_priority_then_oldest(db, make_user):
    low, high_old, high_new, mid = make_tasks(
        db, task_line(priority=0), task_line(priority=5), task_line(priority=5), task_line(priority=2)
    )
    user = make_user()
    order = []
    while (offer := _next(db, user)) is not None:
        order.append(offer.task_id)
        _annotate(db, user, offer)
    assert order == [high_old, high_new, mid, low]


def test_permutation_is_recorded_and_is_what_the_annotator_sees(db, make_user):
    (task_id,) = make_tasks(db, task_line("ranking", n=6, overlap=6))
    canonical = list(
        db.scalars(
            select(TaskPosition.generation_id).where(TaskPosition.task_id == task_id).order_by(TaskPosition.position)
        )
    )
    orders = set()
    for _ in range(6):
        user = make_user()
        offer = _next(db, user)
        shown = [g for g, _ in offer.responses]
        assignment = db.scalars(select(Assignment).where(Assignment.user_id == user.id)).one()
        assert assignment.permutation == shown and sorted(shown) == sorted(canonical)
        orders.add(tuple(shown))
        annotation = _annotate(db, user, offer)
        assert annotation.positions == shown
    assert len(orders) > 1  # 6 annotators, 720 orders: all equal would mean no shuffle


def test_leases_count_toward_overlap_and_expiry_frees_the_slot(db, make_user):
    (task_id,) = make_tasks(db, task_line(overlap=2))
    a, b, c = make_user(), make_user(), make_user()
    assert _next(db, a).task_id == task_id
    assert _next(db, b).task_id == task_id
    assert _next(db, c) is None  # two leases fill overlap 2
    later = utcnow() + timedelta(minutes=11)
    assert _next(db, c, now=later).task_id == task_id  # a's and b's leases expired


def test_done_task_not_offered_again_and_completed_task_leaves_queue(db, make_user):
    (task_id,) = make_tasks(db, task_line(overlap=2))
    a, b, c = make_user(), make_user(), make_user()
    _annotate(db, a, _next(db, a))
    assert _next(db, a) is None
    _annotate(db, b, _next(db, b))
    task = db.get(Task, task_id)
    db.refresh(task)
    assert task.done_count == 2 and task.completed
    assert _next(db, c) is None


def test_skip_records_reason_frees_slot_and_never_reoffers(db, make_user):
    (task_id,) = make_tasks(db, task_line(overlap=1))
    a, b = make_user(), make_user()
    _next(db, a)
    assert _next(db, b) is None
    skip_task(db, user=a, task_id=task_id, reason="can't judge")
    db.commit()
    row = db.scalars(select(Assignment).where(Assignment.user_id == a.id)).one()
    assert (row.status, row.skip_reason) == ("skipped", "can't judge")
    assert _next(db, a) is None
    assert _next(db, a, now=utcnow() + timedelta(days=1)) is None
    assert _next(db, b).task_id == task_id


def test_skip_errors(db, make_user):
    (task_id,) = make_tasks(db, task_line(overlap=2))
    a = make_user()
    with pytest.raises(AssignmentError) as info:
        skip_task(db, user=a, task_id=task_id, reason="x")
    assert info.value.status == 404
    _next(db, a)
    with pytest.raises(AssignmentError) as info:
        skip_task(db, user=a, task_id=task_id, reason="  ")
    assert info.value.status == 422
    _annotate(db, a, _next(db, a))
    with pytest.raises(AssignmentError) as info:
        skip_task(db, user=a, task_id=task_id, reason="late")
    assert info.value.status == 409


def test_ai_annotations_do_not_take_human_slots(db, make_user):
    (task_id,) = make_tasks(db, task_line(overlap=1))
    (judge,) = make_annotators(db, 1, is_ai=True)
    gens = list(db.scalars(select(TaskPosition.generation_id).where(TaskPosition.task_id == task_id)))
    db.add(
        Annotation(
            task_id=task_id,
            user_id=judge.id,
            source="ai",
            kind="pairwise",
            choice="tie",
            positions=gens,
            idempotency_key="ai-1",
            request_hash="x" * 64,
        )
    )
    db.commit()
    assert _next(db, make_user()).task_id == task_id


# ---- concurrency --------------------------------------------------------------------------------------------


def _worker(user, acked, errors, barrier):
    from app.db import get_sessionmaker

    session = get_sessionmaker()()
    try:
        barrier.wait()
        while True:
            offer = next_task(session, user=user, lease_minutes=10)
            session.commit()
            if offer is None:
                return
            key = uuid.uuid4().hex
            try:
                result = submit_annotation(
                    session,
                    user=user,
                    task_id=offer.task_id,
                    feedback={"choice": "tie"},
                    idempotency_key=key,
                    max_text_bytes=65536,
                )
                annotation_id = result.annotation.id
                session.commit()
            except AnnotationConflict:
                session.rollback()
                continue
            acked.append((annotation_id, offer.task_id, user.id))
    except Exception as exc:  # surfaced by the test
        errors.append(repr(exc))
    finally:
        session.close()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_32_threads_hold_overlap_exactly_no_duplicates_nothing_lost(backend, db, make_user):
    overlaps = [1, 2, 3, 5] * 6
    task_ids = make_tasks(db, *[task_line(overlap=o) for o in overlaps])
    users = make_annotators(db, 32)
    acked, errors = [], []
    barrier = threading.Barrier(len(users))
    threads = [threading.Thread(target=_worker, args=(u, acked, errors, barrier)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    db.expire_all()
    rows = db.execute(
        select(Annotation.id, Annotation.task_id, Annotation.user_id).where(Annotation.deleted_at.is_(None))
    ).all()
    assert sorted(acked) == sorted(tuple(r) for r in rows)  # every acknowledged one stored, nothing else
    assert len({(t, u) for _, t, u in acked}) == len(acked)  # nobody annotated a task twice
    per_task = Counter(t for _, t, _ in acked)
    for task_id, overlap in zip(task_ids, overlaps):
        task = db.get(Task, task_id)
        assert per_task[task_id] == task.done_count == overlap and task.completed  # exactly the overlap
    assert len(acked) == sum(overlaps)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_expired_lease_taken_again_keeps_the_order_seen_before(backend, db):
    (task_id,) = make_tasks(db, task_line("ranking", n=5))
    (user,) = make_annotators(db, 1)
    first = _next(db, user)
    again = _next(db, user, now=utcnow() + timedelta(minutes=30))
    assert again.task_id == task_id and again.responses == first.responses
    assert again.lease_expires_at > first.lease_expires_at
    assert db.scalar(select(func.count()).select_from(Assignment)) == 1


def test_renew_extends_a_live_lease_and_takes_an_expired_one_again_while_a_slot_is_free(db):
    from app.services.assignment import renew_lease
    from app.services.retirement import retire_tasks

    open_task, contested, retired = make_tasks(
        db, task_line(overlap=1, priority=3), task_line(overlap=1, priority=2), task_line(priority=1)
    )
    slow, fast = make_annotators(db, 2)
    offer = _next(db, slow)
    later = utcnow() + timedelta(minutes=8)
    lease = renew_lease(db, user=slow, task_id=open_task, lease_minutes=10, now=later)
    assert lease.lease_expires_at == later + timedelta(minutes=10) > offer.lease_expires_at
    assert lease.permutation == [g for g, _ in offer.responses]
    # Expired, and the task still has a free slot: renewing takes it again.
    much_later = later + timedelta(minutes=30)
    assert renew_lease(db, user=slow, task_id=open_task, lease_minutes=10, now=much_later).task_id == open_task
    db.commit()
    _annotate(db, slow, _next(db, slow, now=much_later))
    with pytest.raises(AssignmentError, match="already annotated") as refused:
        renew_lease(db, user=slow, task_id=open_task, lease_minutes=10)
    assert refused.value.status == 409
    db.rollback()
    # Expired, and another annotator took the only slot meanwhile: refused, saying why.
    assert _next(db, slow).task_id == contested
    expired = utcnow() + timedelta(minutes=11)
    assert _next(db, fast, now=expired).task_id == contested
    with pytest.raises(AssignmentError, match="other annotators have taken its remaining slots"):
        renew_lease(db, user=slow, task_id=contested, lease_minutes=10, now=expired)
    db.rollback()
    with pytest.raises(AssignmentError, match="not assigned to you") as refused:
        renew_lease(db, user=slow, task_id=retired, lease_minutes=10)
    assert refused.value.status == 404
    db.rollback()
    skip_task(db, user=fast, task_id=contested, reason="unclear")
    db.commit()
    assert _next(db, fast).task_id == retired
    retire_tasks(db, ids=[retired])
    db.commit()
    with pytest.raises(AssignmentError, match="was retired"):
        renew_lease(db, user=fast, task_id=retired, lease_minutes=10)
