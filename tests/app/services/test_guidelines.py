"""Guidelines: versions per scope (the project, a batch), the ones in force for a task, what the annotate page
opens, and the version each annotation records (the submit's SQL, on SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid

import pytest

from app.models import Annotation
from app.services.annotations import submit_annotation
from app.services.assignment import next_task
from app.services.errors import NotFound
from app.services.guidelines import (
    GuidelinesInvalid,
    guideline_batches,
    guidelines_for_task,
    guidelines_page,
    list_versions,
    save_guidelines,
    show_to_annotator,
)
from tests.conftest import BACKENDS
from tests.factories import make_annotators, make_batch, make_job, make_tasks, task_line


def _save(db, body: str, job_id: int | None = None):
    saved = save_guidelines(db, body=body, job_id=job_id, author_id=None)
    db.commit()
    return saved


def test_every_save_is_a_version_and_saving_the_same_text_again_stores_nothing(db):
    first = _save(db, "Prefer the **correct** answer.\r\n")
    assert first.created and first.guidelines.version == 1 and first.guidelines.body == "Prefer the **correct** answer."
    again = _save(db, "  Prefer the **correct** answer.  ")
    assert not again.created and again.guidelines.id == first.guidelines.id
    second = _save(db, "Prefer the correct answer; then the shorter.")
    assert second.created and second.guidelines.version == 2
    assert [g.version for g in list_versions(db)] == [2, 1]  # old versions stay
    assert list_versions(db)[1].body == "Prefer the **correct** answer."


def test_text_that_cannot_be_shown_and_jobs_that_are_no_batch_are_refused(db):
    with pytest.raises(GuidelinesInvalid, match="bidi override"):
        _save(db, "Judge \u202e carefully")
    with pytest.raises(GuidelinesInvalid, match="longer than 256 KiB"):
        _save(db, "x" * (256 * 1024 + 1))
    train = make_job(db, kind="train")
    for job_id in (train.id, 987654):
        with pytest.raises(NotFound, match="made no tasks"):
            _save(db, "Batch rules.", job_id=job_id)
    db.rollback()
    assert list_versions(db) == []


def test_a_batch_s_own_guidelines_replace_the_project_s_until_emptied(db):
    (plain,) = make_tasks(db, task_line())
    job, (batched,) = make_batch(db, task_line())
    assert guidelines_for_task(db, task_id=batched) is None  # none written yet
    project = _save(db, "Project rules.").guidelines
    assert guidelines_for_task(db, task_id=batched) == project
    own = _save(db, "Batch rules.", job_id=job.id).guidelines
    assert (own.job_id, own.version) == (job.id, 1)
    assert guidelines_for_task(db, task_id=batched) == own and guidelines_for_task(db, task_id=plain) == project
    _save(db, "", job_id=job.id)  # an empty version: the batch is back on the project's guidelines
    assert guidelines_for_task(db, task_id=batched) == project
    with pytest.raises(NotFound):
        guidelines_for_task(db, task_id=987654)
    (batch,) = guideline_batches(db)
    assert (batch.job_id, batch.tasks, batch.has_guidelines) == (job.id, 1, True)
    page = guidelines_page(db, job_id=job.id)
    assert page.current.body == "" and page.project == project and [v.version for v in page.versions] == [2, 1]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_the_annotate_page_opens_each_version_once_per_annotator(backend, db):
    alice, bob = make_annotators(db, 2)
    v1 = _save(db, "Rules.").guidelines
    assert show_to_annotator(db, user_id=alice.id, version_id=v1.id).opened
    assert not show_to_annotator(db, user_id=alice.id, version_id=v1.id).opened
    assert show_to_annotator(db, user_id=bob.id, version_id=v1.id).opened  # per annotator
    v2 = _save(db, "Rules, changed.").guidelines
    shown = show_to_annotator(db, user_id=alice.id, version_id=v2.id)
    assert shown.opened and shown.guidelines.body == "Rules, changed."
    assert show_to_annotator(db, user_id=alice.id, version_id=None) is None
    empty = _save(db, "").guidelines
    assert show_to_annotator(db, user_id=alice.id, version_id=empty.id) is None  # nothing to show


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_each_annotation_records_the_version_shown_else_the_one_in_force(backend, db):
    job, batched = make_batch(db, task_line(overlap=3), task_line(overlap=3))
    (plain,) = make_tasks(db, task_line(overlap=3, priority=-1))
    other_job, _ = make_batch(db, task_line(priority=-2))
    project_v1 = _save(db, "Project rules.").guidelines
    batch_v1 = _save(db, "Batch rules.", job_id=job.id).guidelines
    other = _save(db, "Other batch rules.", job_id=other_job.id).guidelines
    batch_v2 = _save(db, "Batch rules, changed.", job_id=job.id).guidelines
    alice, bob, carol = make_annotators(db, 3)

    def annotate(user, shown):
        offer = next_task(db, user=user, lease_minutes=10)
        db.commit()
        result = submit_annotation(
            db,
            user=user,
            task_id=offer.task_id,
            feedback={"choice": "tie"},
            idempotency_key=uuid.uuid4().hex,
            max_text_bytes=65536,
            guideline_version_id=shown,
        )
        db.commit()
        return offer, db.get(Annotation, result.annotation_id)

    offer, annotation = annotate(alice, None)  # no claim: the version in force
    assert offer.task_id == batched[0] and offer.guideline_version_id == batch_v2.id
    assert annotation.guideline_version_id == batch_v2.id
    _, annotation = annotate(bob, batch_v1.id)  # an older version of the task's batch: what bob was shown
    assert annotation.guideline_version_id == batch_v1.id
    _, annotation = annotate(carol, other.id)  # another batch's version is no claim for this task
    assert annotation.guideline_version_id == batch_v2.id
    _, annotation = annotate(alice, project_v1.id)  # the project's version is one this task could show
    assert annotation.guideline_version_id == project_v1.id
    for user in (bob, carol, alice):
        offer, annotation = annotate(user, None)
    assert offer.task_id == plain and annotation.guideline_version_id == project_v1.id


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_two_admins_saving_at_once_on_postgresql_one_is_told_to_reload(backend, db):
    """Both read version 1 as the next; the unique index stops the second, which is told to reload (on SQLite the
    writer gate serializes the two saves: the second simply becomes version 2)."""
    import threading

    from sqlalchemy import text

    from app.db import get_sessionmaker
    from app.services.errors import Conflict
    from tests.factories import wait_for

    save_guidelines(db, body="First admin's rules.", job_id=None, author_id=None)  # flushed, not committed
    outcome: list[object] = []
    other = get_sessionmaker()()

    def second_admin():
        try:
            outcome.append(save_guidelines(other, body="Second admin's rules.", job_id=None, author_id=None))
        except Conflict as exc:
            outcome.append(exc)
        finally:
            other.rollback()
            other.close()

    thread = threading.Thread(target=second_admin)
    thread.start()

    def second_is_waiting() -> bool:
        db.execute(text("SELECT pg_stat_clear_snapshot()"))  # the view is a snapshot per transaction otherwise
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return db.execute(text(waiting)).scalar_one() > 0

    wait_for(second_is_waiting, timeout=10, what="the second save to wait for the first one's row")
    db.commit()
    thread.join(10)
    assert isinstance(outcome[0], Conflict) and "reload" in str(outcome[0]) and outcome[0].status == 409
    assert [v.body for v in list_versions(db)] == ["First admin's rules."]
