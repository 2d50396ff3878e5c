"""Jobs: the admin pages (list, and a live detail page that polls itself with htmx) and the /api/v1 endpoints."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response

from app.deps import ApiAdmin, PageAdmin, SessionDep, verify_csrf
from app.models import JOB_STATUSES, Job
from app.services.jobs import (
    FINISHED_STATUSES,
    JobError,
    JobNotFound,
    eta_seconds,
    get_job,
    job_metrics,
    job_to_dict,
    list_jobs,
    metric_to_dict,
    request_cancel,
)
from app.templating import is_htmx, render

router = APIRouter(dependencies=[Depends(verify_csrf)], include_in_schema=False)
api = APIRouter(prefix="/api/v1", tags=["jobs"])

METRICS_PAGE = 2000


def _job_or_404(db, job_id: int) -> Job:
    try:
        return get_job(db, job_id=job_id)
    except JobNotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None


def _status_or_422(status: str | None) -> str | None:
    if status and status not in JOB_STATUSES:
        raise HTTPException(status_code=422, detail=f"status must be one of {', '.join(JOB_STATUSES)}")
    return status or None


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def job_view(job: Job) -> dict[str, Any]:
    total = job.progress_total or 0.0
    return {"active": job.status not in FINISHED_STATUSES,
            "percent": round(100.0 * job.progress_done / total, 1) if total > 0 else None,
            "eta": format_duration(eta_seconds(job))}


# ---- pages ----------------------------------------------------------------------------------------------------

@router.get("/admin/jobs")
def jobs_page(request: Request, admin: PageAdmin, db: SessionDep,
              status: Annotated[str | None, Query()] = None, kind: Annotated[str | None, Query()] = None) -> Response:
    status = _status_or_422(status)
    jobs = list_jobs(db, status=status, kind=kind or None, limit=200)
    return render(request, "jobs.html", {
        "jobs": jobs, "views": {j.id: job_view(j) for j in jobs}, "status": status or "", "kind": kind or "",
        "statuses": JOB_STATUSES, "any_active": any(j.status not in FINISHED_STATUSES for j in jobs),
    }, block="job_table")


@router.get("/admin/jobs/{job_id}")
def job_page(request: Request, job_id: int, admin: PageAdmin, db: SessionDep) -> Response:
    job = _job_or_404(db, job_id)
    return render(request, "job.html", {"job": job, "view": job_view(job)}, block="live")


@router.get("/admin/jobs/{job_id}/metrics")
def job_metrics_json(job_id: int, admin: PageAdmin, db: SessionDep,
                     after: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    """The plots' data: metric points after id `after`, and whether more are to come."""
    job = _job_or_404(db, job_id)
    points = job_metrics(db, job_id=job_id, after_id=after, limit=METRICS_PAGE)
    return {"status": job.status, "finished": job.status in FINISHED_STATUSES,
            "more": len(points) == METRICS_PAGE, "metrics": [metric_to_dict(m) for m in points]}


@router.post("/admin/jobs/{job_id}/cancel")
def cancel_job_form(request: Request, job_id: int, admin: PageAdmin, db: SessionDep) -> Response:
    _job_or_404(db, job_id)
    try:
        request_cancel(db, job_id=job_id)
        db.commit()
    except JobError as exc:
        db.rollback()
        job = _job_or_404(db, job_id)
        return render(request, "job.html", {"job": job, "view": job_view(job), "cancel_error": str(exc)},
                      block="live", status_code=409)
    if is_htmx(request):
        job = _job_or_404(db, job_id)
        return render(request, "job.html", {"job": job, "view": job_view(job)}, block="live")
    return RedirectResponse(f"/admin/jobs/{job_id}", status_code=303)


# ---- API ------------------------------------------------------------------------------------------------------

@api.get("/jobs")
def api_list_jobs(admin: ApiAdmin, db: SessionDep, status: Annotated[str | None, Query()] = None,
                  kind: Annotated[str | None, Query()] = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
    """Jobs, newest first."""
    return [job_to_dict(j) for j in list_jobs(db, status=_status_or_422(status), kind=kind, limit=limit)]


@api.get("/jobs/{job_id}")
def api_get_job(job_id: int, admin: ApiAdmin, db: SessionDep) -> dict[str, Any]:
    """One job: status, progress (done, total, message, fraction, eta_s), metrics (latest values), error, result."""
    return job_to_dict(_job_or_404(db, job_id))


@api.get("/jobs/{job_id}/metrics")
def api_job_metrics(job_id: int, admin: ApiAdmin, db: SessionDep,
                    after: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    """The job's metric series: points with id > `after`, oldest first (page with the last id seen)."""
    job = _job_or_404(db, job_id)
    points = job_metrics(db, job_id=job_id, after_id=after, limit=METRICS_PAGE)
    return {"status": job.status, "more": len(points) == METRICS_PAGE,
            "metrics": [metric_to_dict(m) for m in points]}


@api.post("/jobs/{job_id}/cancel")
def api_cancel_job(job_id: int, admin: ApiAdmin, db: SessionDep) -> dict[str, Any]:
    """Cancel: a queued job at once (status cancelled); a running one is stopped by its worker within seconds."""
    _job_or_404(db, job_id)
    try:
        job = request_cancel(db, job_id=job_id)
    except JobError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    db.commit()
    return job_to_dict(job)
