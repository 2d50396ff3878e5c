"""The jobs API: list, one job, its metric series, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from app.deps import ApiAdmin, SessionDep
from app.inputs import DbId, Offset
from app.services.jobs import get_job, job_metrics_page, job_to_dict, list_jobs, request_cancel

router = APIRouter(prefix="/api/v1", tags=["jobs"])


@router.get("/jobs")
def api_list_jobs(
    admin: ApiAdmin,
    db: SessionDep,
    status: Annotated[str | None, Query()] = None,
    kind: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Jobs, newest first."""
    return [job_to_dict(j) for j in list_jobs(db, status=status or None, kind=kind, limit=limit)]


@router.get("/jobs/{job_id}")
def api_get_job(job_id: DbId, admin: ApiAdmin, db: SessionDep) -> dict[str, Any]:
    """One job: status, progress (done, total, message, fraction, eta_s), metrics (latest values), error, result."""
    return job_to_dict(get_job(db, job_id=job_id))


@router.get("/jobs/{job_id}/metrics")
def api_job_metrics(job_id: DbId, admin: ApiAdmin, db: SessionDep, after: Offset = 0) -> dict[str, Any]:
    """The job's metric series: points with id > `after`, oldest first (page with the last id seen)."""
    return job_metrics_page(db, job_id=job_id, after_id=after)


@router.post("/jobs/{job_id}/cancel")
def api_cancel_job(job_id: DbId, admin: ApiAdmin, db: SessionDep) -> dict[str, Any]:
    """Cancel: a queued job at once (status cancelled); a running one is stopped by its worker within seconds."""
    get_job(db, job_id=job_id)
    job = request_cancel(db, job_id=job_id)
    db.commit()
    return job_to_dict(job)
