"""The queue's database operations. Every state change is one conditional UPDATE, so two workers (or a worker
and the stale sweep, or a worker and a cancel) can never both win the same transition.

States: queued -> running -> succeeded | failed | cancelled; running -> queued again when its worker is lost
(stale heartbeat) or stopped (SIGTERM). Writes about a running job are conditioned on `worker_id`, so a worker
or child that lost its job can no longer touch it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from app.models import Job, JobMetric, utcnow

ERROR_LINES = 40  # a failed job keeps this many last lines of its traceback / stderr


def tail_lines(text: str, n: int = ERROR_LINES) -> str:
    lines = text.rstrip().splitlines()
    return "\n".join(lines[-n:])


def _update(session: Session, *conditions, **values):
    return session.execute(update(Job).where(*conditions).values(**values).execution_options(synchronize_session=False))


def claim_next(session: Session, *, worker_id: str, now: datetime | None = None) -> Job | None:
    """Take the highest-priority, oldest queued job: PostgreSQL locks the row with FOR UPDATE SKIP LOCKED (other
    workers skip it instead of waiting); SQLite uses one atomic conditional UPDATE (its writers are serialized)."""
    now = now or utcnow()
    oldest = select(Job.id).where(Job.status == "queued").order_by(Job.priority.desc(), Job.id).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        job_id = session.execute(oldest.with_for_update(skip_locked=True)).scalar()
        if job_id is None:
            return None
        target = Job.id == job_id
    else:
        target = Job.id == oldest.scalar_subquery()
    claimed = session.execute(
        update(Job)
        .where(target, Job.status == "queued")
        .values(
            status="running",
            worker_id=worker_id,
            attempts=Job.attempts + 1,
            started_at=now,
            heartbeat_at=now,
            finished_at=None,
            error=None,
            progress_done=0.0,
            progress_total=0.0,
            progress_message="",
            metrics={},
            result={},
            failed_stage=None,
            error_summary=None,
            error_log=None,
        )
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    ).scalar()
    if claimed is None:
        return None
    # A retried job starts its plots afresh: the series of a lost attempt would mix with the new one.
    session.execute(delete(JobMetric).where(JobMetric.job_id == claimed))
    return session.execute(select(Job).where(Job.id == claimed).execution_options(populate_existing=True)).scalar_one()


def heartbeat(session: Session, *, job_id: int, worker_id: str, now: datetime | None = None) -> bool:
    """Record that the worker is alive; False when the job is no longer this worker's (swept, finished)."""
    result = _update(
        session, Job.id == job_id, Job.worker_id == worker_id, Job.status == "running", heartbeat_at=now or utcnow()
    )
    return result.rowcount == 1


@dataclass(frozen=True)
class RunState:
    held: bool  # still running under this worker
    cancel_requested: bool


def run_state(session: Session, *, job_id: int, worker_id: str) -> RunState:
    row = session.execute(select(Job.status, Job.worker_id, Job.cancel_requested).where(Job.id == job_id)).first()
    if row is None:
        return RunState(held=False, cancel_requested=True)  # deleted: stop it
    return RunState(
        held=row.status == "running" and row.worker_id == worker_id, cancel_requested=bool(row.cancel_requested)
    )


def finish(
    session: Session,
    *,
    job_id: int,
    worker_id: str,
    status: str,
    error: str | None = None,
    result: dict[str, Any] | None = None,
    failed_stage: str | None = None,
    error_summary: str | None = None,
    error_log: str | None = None,
    now: datetime | None = None,
) -> bool:
    """running -> succeeded | failed | cancelled, only if this worker still holds the job. A failure may say
    which stage failed, its one meaningful line and its log (a path under the job's output dir)."""
    assert status in ("succeeded", "failed", "cancelled"), status
    values: dict[str, Any] = {
        "status": status,
        "finished_at": now or utcnow(),
        "error": error,
        "failed_stage": failed_stage,
        "error_summary": error_summary,
        "error_log": error_log,
    }
    if result is not None:
        values["result"] = result
    return (
        _update(session, Job.id == job_id, Job.worker_id == worker_id, Job.status == "running", **values).rowcount == 1
    )


def requeue(
    session: Session,
    *,
    job_id: int,
    worker_id: str,
    count_attempt: bool = False,
    message: str = "requeued: its worker stopped",
    now: datetime | None = None,
) -> str | None:
    """Give a job back to the queue (its worker is stopping). The attempt is not counted against the job unless
    `count_attempt`: a worker being shut down says nothing about the job. A job whose cancel was requested
    meanwhile is cancelled instead. Returns the new status, or None when the worker no longer held it."""
    held = (Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
    if _update(
        session,
        *held,
        Job.cancel_requested.is_(True),
        status="cancelled",
        finished_at=now or utcnow(),
        error="cancelled",
    ).rowcount:
        return "cancelled"
    attempts = Job.attempts if count_attempt else Job.attempts - 1
    if _update(
        session,
        *held,
        status="queued",
        worker_id=None,
        attempts=attempts,
        heartbeat_at=None,
        progress_message=message,
    ).rowcount:
        return "queued"
    return None


@dataclass(frozen=True)
class SweepResult:
    job_id: int
    status: str  # queued | failed | cancelled


def sweep_stale(session: Session, *, stale_after_s: float, now: datetime | None = None) -> list[SweepResult]:
    """Jobs whose worker stopped heartbeating (killed, machine lost): requeue them while attempts remain, else
    fail them saying why. A cancel requested meanwhile wins. Every worker runs this on every poll."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=stale_after_s)
    stale = or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff)
    rows = session.execute(
        select(Job.id, Job.worker_id, Job.attempts, Job.max_attempts, Job.cancel_requested).where(
            Job.status == "running", stale
        )
    ).all()
    swept: list[SweepResult] = []
    for row in rows:
        # Re-check in the UPDATE itself: the worker may have heartbeated (or finished) since the SELECT.
        same = (Job.id == row.id, Job.status == "running", Job.worker_id == row.worker_id, stale)
        lost = f"worker {row.worker_id} lost: no heartbeat for over {stale_after_s:g} s"
        if row.cancel_requested:
            status, values = "cancelled", {"status": "cancelled", "finished_at": now, "error": f"cancelled ({lost})"}
        elif row.attempts >= row.max_attempts:
            status, values = (
                "failed",
                {
                    "status": "failed",
                    "finished_at": now,
                    "error": f"{lost}; attempt {row.attempts} of {row.max_attempts}, no attempts left",
                    "error_summary": (
                        f"its worker was lost (no heartbeat for over {stale_after_s:g} s) "
                        f"and no attempts are left ({row.attempts} of {row.max_attempts})"
                    ),
                },
            )
        else:
            status, values = (
                "queued",
                {
                    "status": "queued",
                    "worker_id": None,
                    "heartbeat_at": None,
                    "progress_message": f"requeued after attempt {row.attempts}: {lost}",
                },
            )
        if _update(session, *same, **values).rowcount:
            swept.append(SweepResult(row.id, status))
    return swept
