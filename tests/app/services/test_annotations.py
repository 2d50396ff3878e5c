"""Submitting annotations: validation by kind, idempotency, late submits, undo, progress, and 8 threads racing
one key (the JSON API: tests/app/api/test_annotations_api.py)."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.models import Annotation, Assignment, Task, utcnow
from app.services.annotations import (
    AnnotationConflict,
    AnnotationInvalid,
    my_progress,
    submit_annotation,
    undo_annotation,
)
from app.services.assignment import next_task
from tests.conftest import BACKENDS
from tests.factories import make_annotators, make_tasks, task_line


def _offer(db, user, **kw):
    offer = next_task(db, user=user, lease_minutes=10, **kw)
    db.commit()
    return offer


def _submit(db, user, task_id, feedback, key=None, **kw):
    result = submit_annotation(
        db,
        user=user,
        task_id=task_id,
        feedback=feedback,
        idempotency_key=key or uuid.uuid4().hex,
        max_text_bytes=65536,
        **kw,
    )
    db.commit()
    return result


def _count(db, model=Annotation, *where):
    db.expire_all()
    return db.scalar(select(func.count()).select_from(model).where(*where))


def test_pairwise_is_stored_by_generation_id_with_positions_and_counts(db):
    (task_id,) = make_tasks(db, task_line(overlap=2))
    (user,) = make_annotators(db, 1)
    offer = _offer(db, user)
    shown = [g for g, _ in offer.responses]
    result = _submit(
        db,
        user,
        task_id,
        {
            "choice": "chosen",
            "chosen_id": shown[1],
            "strength": 3,
            "critiques": {str(shown[0]): " too long "},
            "critique": "B wins",
            "rewrite": "The ideal.",
            "flags": ["broken", "broken"],
        },
        time_spent_ms=4200,
    )
    a = result.annotation
    assert not result.replayed
    assert (a.choice, a.chosen_id, a.strength, a.positions, a.source) == ("chosen", shown[1], 3, shown, "human")
    assert a.critiques == {str(shown[0]): "too long"} and a.critique == "B wins" and a.rewrite == "The ideal."
    assert a.flags == ["broken"] and a.time_spent_ms == 4200 and a.ranking is None
    task = db.get(Task, task_id)
    db.refresh(task)
    assert task.done_count == 1 and not task.completed
    assert db.scalars(select(Assignment.status).where(Assignment.user_id == user.id)).one() == "done"


def test_ranking_and_rating_kinds(db):
    rank_id, rate_id = make_tasks(db, task_line("ranking", n=4), task_line("rating", n=3))
    (user,) = make_annotators(db, 1)
    offer = _offer(db, user)
    assert offer.task_id == rank_id
    order = [g for g, _ in offer.responses][::-1]
    assert _submit(db, user, rank_id, {"ranking": order}).annotation.ranking == order
    offer = _offer(db, user)
    ids = [g for g, _ in offer.responses]
    ratings = {str(ids[0]): "good", str(ids[1]): "bad", str(ids[2]): "good"}
    stored = _submit(db, user, rate_id, {"ratings": ratings}).annotation
    assert stored.ratings == ratings and stored.kind == "rating"


def _invalid_cases():
    # (kind, feedback builder from response ids, message fragment)
    return [
        ("pairwise", lambda ids: {}, "choice must be"),
        ("pairwise", lambda ids: {"choice": "A"}, "choice must be"),
        ("pairwise", lambda ids: {"choice": "chosen", "chosen_id": 999999, "strength": 2}, "not one of this task"),
        ("pairwise", lambda ids: {"choice": "chosen", "chosen_id": ids[0]}, "strength must be"),
        ("pairwise", lambda ids: {"choice": "chosen", "chosen_id": ids[0], "strength": 4}, "strength must be"),
        ("pairwise", lambda ids: {"choice": "tie", "strength": 2}, "only go with choice=chosen"),
        ("pairwise", lambda ids: {"choice": "tie", "ranking": ids}, "ranking is for ranking tasks"),
        ("pairwise", lambda ids: {"choice": "tie", "flags": ["spam"]}, "flags must be"),
        ("pairwise", lambda ids: {"choice": "tie", "ratings": {str(ids[0]): "meh"}}, "good or bad"),
        ("pairwise", lambda ids: {"choice": "tie", "critique": "x" * 70000}, "longer than"),
        ("ranking", lambda ids: {"ranking": ids[:2]}, "must list all 3"),
        ("ranking", lambda ids: {"ranking": [ids[0], ids[0], ids[1]]}, "permutation"),
        ("ranking", lambda ids: {"ranking": [ids[0], ids[1], 999999]}, "not one of this task"),
        ("ranking", lambda ids: {"choice": "tie", "ranking": ids}, "are for pairwise tasks"),
        ("rating", lambda ids: {"ratings": {str(ids[0]): "good"}}, "rate every response"),
        ("rating", lambda ids: {}, "ratings must be"),
        ("rating", lambda ids: {"ratings": {str(ids[0]): "good", "999999": "bad"}}, "not one of this task"),
    ]


@pytest.mark.parametrize("kind,build,message", _invalid_cases())
def test_invalid_feedback_is_422_and_stores_nothing(db, kind, build, message):
    (task_id,) = make_tasks(db, task_line(kind, n=3 if kind != "pairwise" else 2))
    (user,) = make_annotators(db, 1)
    ids = [g for g, _ in _offer(db, user).responses]
    with pytest.raises(AnnotationInvalid, match=message):
        submit_annotation(
            db, user=user, task_id=task_id, feedback=build(ids), idempotency_key="k", max_text_bytes=65536
        )
    db.rollback()
    assert _count(db) == 0 and db.get(Task, task_id).done_count == 0


def test_replay_returns_first_result_and_other_body_is_409(db):
    (task_id,) = make_tasks(db, task_line(overlap=2))
    (user,) = make_annotators(db, 1)
    ids = [g for g, _ in _offer(db, user).responses]
    first = _submit(db, user, task_id, {"choice": "chosen", "chosen_id": ids[0], "strength": 2}, key="same")
    again = _submit(db, user, task_id, {"choice": "chosen", "chosen_id": ids[0], "strength": 2}, key="same")
    assert again.replayed and again.annotation.id == first.annotation.id
    with pytest.raises(AnnotationConflict, match="different body"):
        _submit(db, user, task_id, {"choice": "tie"}, key="same")
    db.rollback()
    assert _count(db) == 1 and db.get(Task, task_id).done_count == 1


def test_second_annotation_of_same_task_and_unassigned_task_are_refused(db):
    first, other = make_tasks(db, task_line(overlap=2), task_line(overlap=2))
    (user,) = make_annotators(db, 1)
    _offer(db, user)
    _submit(db, user, first, {"choice": "tie"})
    with pytest.raises(AnnotationConflict, match="already annotated"):
        _submit(db, user, first, {"choice": "tie"})
    db.rollback()
    with pytest.raises(AnnotationConflict, match="not assigned to you"):
        _submit(db, user, other, {"choice": "tie"})
    db.rollback()
    with pytest.raises(AnnotationConflict) as info:
        _submit(db, user, 987654, {"choice": "tie"})
    assert info.value.status == 404


def test_late_submit_refused_when_task_filled_meanwhile_accepted_when_slot_free(db):
    full, free = make_tasks(db, task_line(overlap=1, priority=1), task_line(overlap=2))
    slow, fast, late = make_annotators(db, 3)
    assert _offer(db, slow).task_id == full
    later = utcnow() + timedelta(minutes=11)
    assert _offer(db, fast, now=later).task_id == full  # slow's lease expired: the slot went to fast
    _submit(db, fast, full, {"choice": "tie"}, now=later)
    with pytest.raises(AnnotationConflict, match="expired and the task has meanwhile been completed"):
        _submit(db, slow, full, {"choice": "tie"}, now=later)
    db.rollback()
    assert db.get(Task, full).done_count == 1 and _count(db, Annotation, Annotation.task_id == full) == 1
    # A late submit with a free slot is kept.
    assert _offer(db, late, now=later).task_id == free
    even_later = later + timedelta(minutes=30)
    assert _submit(db, late, free, {"choice": "tie"}, now=even_later).annotation.id


def test_a_late_submit_is_refused_with_lease_lost_when_others_hold_the_slot_or_the_task_was_retired(db):
    from app.services.annotations import LeaseLost
    from app.services.retirement import retire_tasks

    held, retired = make_tasks(db, task_line(overlap=1, priority=1), task_line(overlap=2))
    slow, fast = make_annotators(db, 2)
    assert _offer(db, slow).task_id == held
    later = utcnow() + timedelta(minutes=11)
    assert _offer(db, fast, now=later).task_id == held  # fast leased it, has not annotated it yet
    with pytest.raises(LeaseLost, match="expired and the task has meanwhile been taken by other annotators") as lost:
        _submit(db, slow, held, {"choice": "tie", "critique": "long text"}, now=later)
    assert lost.value.status == 409
    db.rollback()
    _submit(db, fast, held, {"choice": "tie"}, now=later)
    assert _offer(db, slow, now=later).task_id == retired
    retire_tasks(db, ids=[retired])
    db.commit()
    with pytest.raises(LeaseLost, match="was retired while you worked on it"):
        _submit(db, slow, retired, {"choice": "tie"})
    db.rollback()
    assert _count(db, Annotation, Annotation.task_id == retired) == 0


def test_undo_soft_deletes_decrements_and_offers_the_task_again(db):
    (task_id,) = make_tasks(db, task_line(overlap=1))
    user, other = make_annotators(db, 2)
    _offer(db, user)
    annotation = _submit(db, user, task_id, {"choice": "tie"}).annotation
    task = db.get(Task, task_id)
    db.refresh(task)
    assert task.completed and _offer(db, other) is None
    undone = undo_annotation(db, user=user, annotation_id=annotation.id, undo_minutes=5, lease_minutes=10)
    db.commit()
    assert undone.deleted_at is not None
    db.refresh(task)
    assert task.done_count == 0 and not task.completed
    assert _count(db, Annotation, Annotation.deleted_at.is_not(None)) == 1  # kept
    assert _offer(db, user).task_id == task_id  # offered again, to the same annotator
    again = _submit(db, user, task_id, {"choice": "tie"}).annotation
    assert again.id != annotation.id
    with pytest.raises(AnnotationConflict, match="already undone"):
        undo_annotation(db, user=user, annotation_id=annotation.id, undo_minutes=5, lease_minutes=10)


def test_undo_window_and_ownership(db):
    (task_id,) = make_tasks(db, task_line(overlap=2))
    user, other = make_annotators(db, 2)
    _offer(db, user)
    annotation = _submit(db, user, task_id, {"choice": "tie"}).annotation
    with pytest.raises(AnnotationConflict) as info:
        undo_annotation(db, user=other, annotation_id=annotation.id, undo_minutes=5, lease_minutes=10)
    assert info.value.status == 404
    with pytest.raises(AnnotationConflict, match="older than 5 minutes"):
        undo_annotation(
            db,
            user=user,
            annotation_id=annotation.id,
            undo_minutes=5,
            lease_minutes=10,
            now=utcnow() + timedelta(minutes=6),
        )
    db.rollback()
    assert db.get(Task, task_id).done_count == 1


def test_progress_today_total_remaining(db):
    make_tasks(db, task_line(overlap=2), task_line(overlap=2), task_line(overlap=2))
    user, other = make_annotators(db, 2)
    assert my_progress(db, user_id=user.id).remaining == 3
    for _ in range(2):
        offer = _offer(db, user)
        _submit(db, user, offer.task_id, {"choice": "tie"})
    offer = _offer(db, other)
    _submit(db, other, offer.task_id, {"choice": "tie"})
    progress = my_progress(db, user_id=user.id)
    assert (progress.today, progress.total, progress.remaining) == (2, 2, 1)
    assert my_progress(db, user_id=user.id, now=utcnow() + timedelta(days=1)).today == 0


# ---- concurrency: a double click from many threads stores one ---------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_same_key_from_8_threads_stores_one(backend, db):
    from app.db import get_sessionmaker

    (task_id,) = make_tasks(db, task_line(overlap=3))
    (user,) = make_annotators(db, 1)
    _offer(db, user)
    results, errors = [], []
    barrier = threading.Barrier(8)

    def click():
        session = get_sessionmaker()()
        try:
            barrier.wait()
            r = submit_annotation(
                session,
                user=user,
                task_id=task_id,
                feedback={"choice": "tie"},
                idempotency_key="double-click",
                max_text_bytes=65536,
            )
            results.append(r.annotation.id)
            session.commit()
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            session.close()

    threads = [threading.Thread(target=click) for _ in range(8)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert not errors and len(set(results)) == 1 and len(results) == 8
    assert _count(db) == 1 and db.get(Task, task_id).done_count == 1
