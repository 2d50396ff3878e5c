"""/admin/guidelines: write the annotation guidelines for the project or one task batch (every save a new version,
Post/Redirect/Get), and read any version."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.deps import ADMIN_PAGES, PageAdmin, SessionDep
from app.inputs import DB_INT_MAX, DbId
from app.services.errors import NotFound, ServiceError
from app.services.guidelines import guideline_version, guidelines_page, save_guidelines
from app.templating import render

router = APIRouter(include_in_schema=False, dependencies=ADMIN_PAGES)


def job_id_from(value: str | None) -> int | None:
    """The scope a form names: empty for the project, else a batch's job id (NotFound for anything else)."""
    value = (value or "").strip()
    if not value:
        return None
    if not value.isdigit() or not 1 <= int(value) <= DB_INT_MAX:
        raise NotFound(f"{value!r} is not a job id")
    return int(value)


def _page(
    request: Request,
    db,
    *,
    job_id: int | None,
    notice: str | None = None,
    error: str | None = None,
    text: str | None = None,
    status_code: int = 200,
) -> Response:
    page = guidelines_page(db, job_id=job_id)
    db.rollback()  # a read: let go of the database before rendering
    if text is None:  # the editor starts from the scope's text; a batch without its own, from the project's
        own = page.current.body if page.current else ""
        text = own or (page.project.body if page.project and job_id is not None else "")
    ctx = {"page": page, "notice": notice, "error": error, "text": text}
    return render(request, "admin_guidelines.html", ctx, status_code=status_code)


@router.get("/admin/guidelines")
def guidelines_admin_page(
    request: Request,
    _admin: PageAdmin,
    db: SessionDep,
    job_id: str | None = None,
    saved: int | None = None,
    unchanged: bool = False,
) -> Response:
    notice = None
    if saved is not None:
        notice = f"Saved as version {saved}."
    elif unchanged:
        notice = "Nothing to save: the text is the current version's."
    return _page(request, db, job_id=job_id_from(job_id), notice=notice)


@router.post("/admin/guidelines")
def save(
    request: Request,
    admin: PageAdmin,
    db: SessionDep,
    body: Annotated[str, Form()] = "",
    job_id: Annotated[str, Form()] = "",
) -> Response:
    scope = job_id_from(job_id)
    try:
        saved = save_guidelines(db, body=body, job_id=scope, author_id=admin.id)
    except ServiceError as exc:
        db.rollback()
        return _page(request, db, job_id=scope, error=str(exc), text=body, status_code=exc.status)
    db.commit()
    where = f"job_id={scope}&" if scope is not None else ""
    outcome = f"saved={saved.guidelines.version}" if saved.created else "unchanged=1"
    return RedirectResponse(f"/admin/guidelines?{where}{outcome}", status_code=303)


@router.get("/admin/guidelines/versions/{version_id}")
def version_page(request: Request, version_id: DbId, _admin: PageAdmin, db: SessionDep) -> Response:
    """One version, current or old: rendered, as written, and a form that saves it again as the newest."""
    guidelines = guideline_version(db, version_id)
    db.rollback()
    return render(request, "admin_guideline_version.html", {"g": guidelines})
