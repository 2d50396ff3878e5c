"""The queue's database layer (claim, heartbeat, finish, requeue, stale sweep, cancel), on both backends."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.jobs import queue
from app.models import Job, utcnow
from app.services.jobs import JobError, enqueue_job, request_cancel
from tests.conftest import BACKENDS

pytestmark = pytest.mark.parametrize("backend", BACKENDS, indirect=True)


def _enqueue(db, kind="k", **kwargs) -> int:
    job = enqueue_job(db, kind=kind, config={"n": 1}, **kwargs)
    db.commit()
    return job.id


def _claim(db, worker="w1"):
    job = queue.claim_next(db, worker_id=worker)
    db.commit()
    return job


def _fresh(db, job_id) -> Job:
    db.expire_all()
    return db.get(Job, job_id)


def test_claims_by_priority_then_age_and_never_twice(db):
    low_old = _enqueue(db)
    high = _enqueue(db, priority=5)
    low_new = _enqueue(db)
    claimed = [_claim(db, f"w{i}") for i in range(4)]
    assert [j.id if j else None for j in claimed] == [high, low_old, low_new, None]
    first = _fresh(db, high)
    assert (first.status, first.worker_id, first.attempts) == ("running", "w0", 1)
    assert first.started_at is not None and first.heartbeat_at is not None


def test_heartbeat_and_finish_only_for_the_holder(db):
    job_id = _enqueue(db)
    _claim(db, "w1")
    assert queue.heartbeat(db, job_id=job_id, worker_id="w2") is False
    assert queue.heartbeat(db, job_id=job_id, worker_id="w1") is True
    assert queue.finish(db, job_id=job_id, worker_id="w2", status="succeeded") is False
    assert queue.finish(db, job_id=job_id, worker_id="w1", status="succeeded", result={"ok": 1}) is True
    db.commit()
    job = _fresh(db, job_id)
    assert (job.status, job.result) == ("succeeded", {"ok": 1})
    assert job.finished_at is not None
    # finished: nothing moves it any more
    assert queue.heartbeat(db, job_id=job_id, worker_id="w1") is False
    assert queue.finish(db, job_id=job_id, worker_id="w1", status="failed") is False


def test_requeue_on_shutdown_does_not_count_the_attempt(db):
    job_id = _enqueue(db)
    _claim(db, "w1")
    assert queue.requeue(db, job_id=job_id, worker_id="w1") == "queued"
    db.commit()
    job = _fresh(db, job_id)
    assert (job.status, job.worker_id, job.attempts) == ("queued", None, 0)
    assert _claim(db, "w2").id == job_id
    assert _fresh(db, job_id).attempts == 1


def test_requeue_of_a_cancel_requested_job_cancels_it(db):
    job_id = _enqueue(db)
    _claim(db, "w1")
    request_cancel(db, job_id=job_id)
    db.commit()
    assert queue.requeue(db, job_id=job_id, worker_id="w1") == "cancelled"
    db.commit()
    assert _fresh(db, job_id).status == "cancelled"


def test_stale_jobs_requeued_until_attempts_used_up_then_failed(db):
    job_id = _enqueue(db, max_attempts=2)
    for attempt, expected in ((1, "queued"), (2, "failed")):
        assert _claim(db, f"w{attempt}").id == job_id
        # fresh heartbeat: not stale
        assert queue.sweep_stale(db, stale_after_s=30) == []
        later = utcnow() + timedelta(seconds=31)
        swept = queue.sweep_stale(db, stale_after_s=30, now=later)
        db.commit()
        assert [(s.job_id, s.status) for s in swept] == [(job_id, expected)]
        job = _fresh(db, job_id)
        assert (job.status, job.attempts) == (expected, attempt)
        # the lost worker can no longer write
        assert queue.heartbeat(db, job_id=job_id, worker_id=f"w{attempt}") is False
    job = _fresh(db, job_id)
    assert "no heartbeat for over 30 s" in job.error and "attempt 2 of 2" in job.error
    assert job.error_summary == "its worker was lost (no heartbeat for over 30 s) and no attempts are left (2 of 2)"
    assert job.finished_at is not None
    assert _claim(db, "w9") is None


def test_stale_cancel_requested_job_is_cancelled(db):
    job_id = _enqueue(db)
    _claim(db)
    request_cancel(db, job_id=job_id)
    db.commit()
    swept = queue.sweep_stale(db, stale_after_s=1, now=utcnow() + timedelta(seconds=5))
    db.commit()
    assert [s.status for s in swept] == ["cancelled"]
    assert _fresh(db, job_id).status == "cancelled"


def test_cancel_queued_at_once_running_by_request_finished_refused(db):
    queued = _enqueue(db)
    job = request_cancel(db, job_id=queued)
    db.commit()
    assert (job.status, job.cancel_requested) == ("cancelled", True)
    assert _claim(db) is None  # a cancelled job is never claimed

    running = _enqueue(db)
    _claim(db)
    job = request_cancel(db, job_id=running)
    db.commit()
    assert (job.status, job.cancel_requested) == ("running", True)
    state = queue.run_state(db, job_id=running, worker_id="w1")
    assert state.held and state.cancel_requested

    with pytest.raises(JobError, match="already cancelled"):
        request_cancel(db, job_id=queued)


def test_enqueue_rejects_bad_input(db):
    with pytest.raises(JobError):
        enqueue_job(db, kind="", config={})
    with pytest.raises(JobError, match="JSON"):
        enqueue_job(db, kind="k", config={"x": object()})
    with pytest.raises(JobError):
        enqueue_job(db, kind="k", config={}, max_attempts=0)


def test_retry_starts_with_fresh_progress_and_metrics(db):
    from sqlalchemy import func, select

    from app.models import JobMetric

    job_id = _enqueue(db)
    _claim(db, "w1")
    job = _fresh(db, job_id)
    job.progress_done, job.progress_total, job.metrics = 3, 10, {"loss": 1.0}
    db.add(JobMetric(job_id=job_id, stage="s", step=3, values={"loss": 1.0}))
    db.commit()
    queue.sweep_stale(db, stale_after_s=1, now=utcnow() + timedelta(seconds=5))
    db.commit()
    _claim(db, "w2")
    job = _fresh(db, job_id)
    assert (job.progress_done, job.progress_total, job.metrics, job.attempts) == (0, 0, {}, 2)
    assert db.scalar(select(func.count()).select_from(JobMetric).where(JobMetric.job_id == job_id)) == 0


def test_concurrent_claims_take_each_job_exactly_once(db):
    import threading

    from app.db import get_sessionmaker

    ids = [_enqueue(db) for _ in range(40)]
    claimed: list[tuple[str, int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def claimer(name: str) -> None:
        try:
            start.wait()
            while True:
                with get_sessionmaker()() as session:
                    job = queue.claim_next(session, worker_id=name)
                    session.commit()
                if job is None:
                    return
                claimed.append((name, job.id))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(f"t{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert sorted(job_id for _, job_id in claimed) == ids  # every job once, none twice
    db.expire_all()
    assert {(j.worker_id, j.id) for j in db.query(Job).all()} == set(claimed)
    assert all(j.attempts == 1 for j in db.query(Job).all())
