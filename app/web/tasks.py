"""Admin page /admin/tasks: upload a JSONL file of tasks (all or nothing) and see every task with its counts."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from app.deps import ADMIN_PAGES, PageAdmin, SessionDep, SettingsDep
from app.inputs import PageNumber
from app.services.tasks import TaskImportError, count_tasks, import_tasks, list_tasks
from app.settings import Settings
from app.templating import render

router = APIRouter(include_in_schema=False, dependencies=ADMIN_PAGES)
PAGE_SIZE = 50


def _page(
    request: Request,
    db,
    *,
    page: int,
    error: str | None = None,
    errors: list | None = None,
    imported: int | None = None,
    status_code: int = 200,
) -> Response:
    ctx = {
        "tasks": list_tasks(db, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE),
        "counts": count_tasks(db),
        "page": page,
        "page_size": PAGE_SIZE,
        "error": error,
        "errors": errors or [],
        "imported": imported,
    }
    db.rollback()
    return render(request, "admin_tasks.html", ctx, block="tasks", status_code=status_code)


@router.get("/admin/tasks")
def tasks_page(
    request: Request, _admin: PageAdmin, db: SessionDep, page: PageNumber = 1, imported: int | None = None
) -> Response:
    return _page(request, db, page=max(1, page), imported=imported)


def _too_large(request: Request, db, settings: Settings) -> Response:
    return _page(
        request,
        db,
        page=1,
        status_code=413,
        error=f"the upload is over the {settings.max_upload_bytes // (1024 * 1024)} MiB limit",
    )


@router.post("/admin/tasks/upload")
async def upload_tasks(request: Request, _admin: PageAdmin, db: SessionDep, settings: SettingsDep) -> Response:
    form = await request.form()  # a body over the upload limit was refused before (app.body_limit)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        return _page(request, db, page=1, status_code=422, error="choose a JSONL file to upload")
    data = await upload.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        return _too_large(request, db, settings)
    return await run_in_threadpool(_import, request, db, data, settings.max_text_bytes)


def _import(request: Request, db, data: bytes, max_text_bytes: int) -> Response:
    try:
        result = import_tasks(db, lines=data.splitlines(), max_text_bytes=max_text_bytes)
    except TaskImportError as exc:
        db.rollback()
        return _page(request, db, page=1, status_code=422, error=str(exc).split(":")[0] + ".", errors=exc.errors)
    db.commit()
    return RedirectResponse(f"/admin/tasks?imported={len(result.task_ids)}", status_code=303)
