"""Jobs: the admin pages (list, and a live detail page that polls itself with htmx)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from app.deps import ADMIN_PAGES, PageAdmin, SessionDep
from app.inputs import DbId, Offset
from app.models import Job
from app.services.jobs import (
    JobError,
    eta_seconds,
    failure_log_path,
    get_job,
    job_metrics_page,
    list_jobs,
    log_url,
    request_cancel,
)
from app.templating import is_htmx, render
from domain.vocabulary import FINISHED_JOB_STATUSES, JOB_STATUSES

router = APIRouter(dependencies=ADMIN_PAGES, include_in_schema=False)


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
    return {
        "active": job.status not in FINISHED_JOB_STATUSES,
        "percent": round(100.0 * job.progress_done / total, 1) if total > 0 else None,
        "eta": format_duration(eta_seconds(job)),
        "log_url": log_url(job),
    }


# ---- pages ----------------------------------------------------------------------------------------------------


@router.get("/admin/jobs")
def jobs_page(
    request: Request,
    admin: PageAdmin,
    db: SessionDep,
    status: Annotated[str | None, Query()] = None,
    kind: Annotated[str | None, Query()] = None,
) -> Response:
    jobs = list_jobs(db, status=status or None, kind=kind or None, limit=200)
    return render(
        request,
        "jobs.html",
        {
            "jobs": jobs,
            "views": {j.id: job_view(j) for j in jobs},
            "status": status or "",
            "kind": kind or "",
            "statuses": JOB_STATUSES,
            "any_active": any(j.status not in FINISHED_JOB_STATUSES for j in jobs),
        },
        block="job_table",
    )


@router.get("/admin/jobs/{job_id}")
def job_page(request: Request, job_id: DbId, admin: PageAdmin, db: SessionDep) -> Response:
    job = get_job(db, job_id=job_id)
    return render(request, "job.html", {"job": job, "view": job_view(job)}, block="live")


@router.get("/admin/jobs/{job_id}/log")
def job_failure_log(job_id: DbId, admin: PageAdmin, db: SessionDep) -> Response:
    """The log a failed job names: its failed stage's stderr, or the job's own output."""
    return FileResponse(failure_log_path(db, job_id=job_id), media_type="text/plain; charset=utf-8")


@router.get("/admin/jobs/{job_id}/metrics")
def job_metrics_json(job_id: DbId, admin: PageAdmin, db: SessionDep, after: Offset = 0) -> dict[str, Any]:
    """The plots' data: metric points after id `after`, and whether more are to come."""
    page = job_metrics_page(db, job_id=job_id, after_id=after)
    # "finished" second, as the plots have always read it
    return {"status": page["status"], "finished": page["status"] in FINISHED_JOB_STATUSES, **page}


@router.post("/admin/jobs/{job_id}/cancel")
def cancel_job_form(request: Request, job_id: DbId, admin: PageAdmin, db: SessionDep) -> Response:
    get_job(db, job_id=job_id)
    try:
        request_cancel(db, job_id=job_id)
        db.commit()
    except JobError as exc:
        db.rollback()
        job = get_job(db, job_id=job_id)
        return render(
            request,
            "job.html",
            {"job": job, "view": job_view(job), "cancel_error": str(exc)},
            block="live",
            status_code=exc.status,
        )
    if is_htmx(request):
        job = get_job(db, job_id=job_id)
        return render(request, "job.html", {"job": job, "view": job_view(job)}, block="live")
    return RedirectResponse(f"/admin/jobs/{job_id}", status_code=303)
