"""The annotate page's data in one call: the leased task, else what is still making tasks; progress; recent answers
and which of them may still be undone."""

from __future__ import annotations

from datetime import timedelta

from app.models import utcnow
from app.services.annotator_workspace import annotator_history, annotator_workspace
from tests.factories import annotate_pairwise, make_annotator, make_generation, make_job, make_prompt, make_task


def _pair(db, text: str):
    prompt = make_prompt(db, text)
    first, second = make_generation(db, prompt, "yes"), make_generation(db, prompt, "no")
    return make_task(db, prompt, [first, second]), first


def test_the_workspace_leases_a_task_and_keeps_it_on_reload(db):
    alice = make_annotator(db, "alice")
    _pair(db, "one?")
    _pair(db, "two?")
    first = annotator_workspace(db, user=alice, lease_minutes=10, undo_minutes=5, recent=5)
    db.commit()
    again = annotator_workspace(db, user=alice, lease_minutes=10, undo_minutes=5, recent=5)
    assert first.offer is not None and again.offer.task_id == first.offer.task_id
    assert first.pending is None


def test_with_nothing_left_it_names_the_job_still_making_tasks(db):
    alice = make_annotator(db, "alice")
    assert annotator_workspace(db, user=alice, lease_minutes=10, undo_minutes=5, recent=5).pending is None
    job = make_job(db, kind="generate", status="running")
    workspace = annotator_workspace(db, user=alice, lease_minutes=10, undo_minutes=5, recent=5)
    assert workspace.offer is None and workspace.pending.job_id == job.id


def test_history_counts_and_marks_only_answers_inside_the_undo_window(db):
    alice = make_annotator(db, "alice")
    old_task, old_pick = _pair(db, "old?")
    new_task, new_pick = _pair(db, "new?")
    old = annotate_pairwise(db, old_task, alice, chosen=old_pick, created_at=utcnow() - timedelta(minutes=30))
    new = annotate_pairwise(db, new_task, alice, chosen=new_pick)
    db.commit()
    history = annotator_history(db, user_id=alice.id, undo_minutes=5, limit=10)
    assert [a.id for a in history.recent] == [new.id, old.id]
    assert history.undoable == {new.id}
    assert history.progress.total == 2
    assert [a.id for a in annotator_history(db, user_id=alice.id, undo_minutes=5, limit=1).recent] == [new.id]
