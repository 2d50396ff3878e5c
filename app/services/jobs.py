"""Jobs as the pages, the API and the CLI see them: enqueue, read, list, cancel, metric series.

The worker's side of the queue (claim, heartbeat, sweep) is app/jobs/queue.py.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.models import Job, JobMetric, utcnow
from app.services.errors import NotFound, ServiceError
from app.settings import get_settings
from domain.vocabulary import JOB_STATUSES

METRICS_PAGE = 2000  # metric points per request of a job's series


class JobError(ServiceError):
    """Bad input for a job operation; the message is safe to show."""


class JobNotFound(NotFound):
    pass


def enqueue_job(
    session: Session,
    *,
    kind: str,
    config: dict[str, Any] | None = None,
    created_by_id: int | None = None,
    priority: int = 0,
    max_attempts: int | None = None,
) -> Job:
    if not kind or len(kind) > 32:
        raise JobError("job kind must be 1-32 characters")
    config = config or {}
    try:
        json.dumps(config)
    except (TypeError, ValueError) as exc:
        raise JobError(f"job config must be JSON: {exc}") from None
    attempts = get_settings().job_max_attempts if max_attempts is None else max_attempts
    if attempts < 1:
        raise JobError("max_attempts must be at least 1")
    job = Job(
        kind=kind, config=config, created_by_id=created_by_id, priority=priority, max_attempts=attempts, status="queued"
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, *, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFound(f"no job {job_id}")
    return job


def list_jobs(session: Session, *, status: str | None = None, kind: str | None = None, limit: int = 100) -> list[Job]:
    if status is not None and status not in JOB_STATUSES:
        raise JobError(f"status must be one of {', '.join(JOB_STATUSES)}, not {status!r}")
    query = select(Job).order_by(Job.id.desc()).limit(max(1, min(limit, 1000)))
    if status is not None:
        query = query.where(Job.status == status)
    if kind is not None:
        query = query.where(Job.kind == kind)
    return list(session.scalars(query))


def request_cancel(session: Session, *, job_id: int) -> Job:
    """A queued job is cancelled at once; a running one gets cancel_requested and its worker stops it (within
    settings.cancel_grace_s plus half a second). Cancelling a finished job is an error."""
    job = get_job(session, job_id=job_id)
    now = utcnow()
    # Conditional UPDATEs: a worker may claim the job between our read and our write.
    cancelled_now = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(status="cancelled", cancel_requested=True, finished_at=now, error="cancelled")
        .execution_options(synchronize_session=False)
    ).rowcount
    if not cancelled_now:
        requested = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running")
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        ).rowcount
        if not requested:
            session.refresh(job)
            raise JobError(f"job {job_id} is already {job.status}", status=409)
    session.flush()
    session.refresh(job)
    return job


def job_metrics(session: Session, *, job_id: int, after_id: int = 0, limit: int = 5000) -> list[JobMetric]:
    query = (
        select(JobMetric).where(JobMetric.job_id == job_id, JobMetric.id > after_id).order_by(JobMetric.id).limit(limit)
    )
    return list(session.scalars(query))


def eta_seconds(job: Job, *, now: datetime | None = None) -> float | None:
    """Remaining time at the average pace since the job started (None until there is progress to go by)."""
    if job.status != "running" or job.started_at is None or job.progress_total <= 0 or job.progress_done <= 0:
        return None
    elapsed = ((now or utcnow()) - job.started_at).total_seconds()
    remaining = max(0.0, job.progress_total - job.progress_done)
    return elapsed / job.progress_done * remaining


def log_url(job: Job) -> str | None:
    """Where the pages serve a failed job's log (admins only)."""
    return f"/admin/jobs/{job.id}/log" if job.error_log and job.output_path else None


def failure_log_path(session: Session, *, job_id: int) -> Path:
    """The log a failed job names (the failed stage's stderr, or the job's own log); NotFound when there is none.
    The name is the worker's, never the client's, and must stay inside the job's output dir."""
    job = get_job(session, job_id=job_id)
    if not job.error_log or not job.output_path:
        raise NotFound(f"job {job_id} names no log")
    base = Path(job.output_path).resolve()
    path = (base / job.error_log).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        raise NotFound(f"job {job_id}'s log {job.error_log} is not on this machine")
    return path


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def job_to_dict(job: Job) -> dict[str, Any]:
    total = job.progress_total or 0.0
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "priority": job.priority,
        "config": job.config,
        "progress": {
            "done": job.progress_done,
            "total": total,
            "message": job.progress_message,
            "fraction": (job.progress_done / total) if total > 0 else None,
            "eta_s": eta_seconds(job),
        },
        "metrics": job.metrics,
        "result": job.result,
        "error": job.error,
        "failed_stage": job.failed_stage,
        "error_summary": job.error_summary,
        "log_url": log_url(job),
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "train_processes": job.train_processes,
        "cancel_requested": job.cancel_requested,
        "worker_id": job.worker_id,
        "output_path": job.output_path,
        "created_by_id": job.created_by_id,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "heartbeat_at": _iso(job.heartbeat_at),
        "finished_at": _iso(job.finished_at),
    }


def metric_to_dict(metric: JobMetric) -> dict[str, Any]:
    return {
        "id": metric.id,
        "stage": metric.stage,
        "step": metric.step,
        "values": metric.values,
        "created_at": _iso(metric.created_at),
    }


def job_metrics_page(session: Session, *, job_id: int, after_id: int = 0) -> dict[str, Any]:
    """A page of the job's metric series as HTTP serves it: points with id > after_id, oldest first, and whether
    more are to come (page with the last id seen)."""
    job = get_job(session, job_id=job_id)
    points = job_metrics(session, job_id=job_id, after_id=after_id, limit=METRICS_PAGE)
    return {"status": job.status, "more": len(points) == METRICS_PAGE, "metrics": [metric_to_dict(m) for m in points]}
