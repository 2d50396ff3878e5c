"""/admin/prompts: upload a JSONL or CSV prompt file (all or nothing, duplicates skipped and counted)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from app.deps import ADMIN_PAGES, PageAdmin, SessionDep, SettingsDep
from app.inputs import PageNumber
from app.services.prompt_import import PromptImportError, import_prompts
from app.services.prompts import list_prompts, prompt_display_text
from app.templating import render

router = APIRouter(include_in_schema=False, dependencies=ADMIN_PAGES)
PAGE_SIZE = 50


def _page(
    request: Request,
    db,
    *,
    page: int = 1,
    error: str | None = None,
    errors: list[str] | None = None,
    done: dict | None = None,
    status_code: int = 200,
) -> Response:
    listing = list_prompts(db, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    prompts = [
        {
            "id": p.id,
            "text": prompt_display_text(p),
            "tags": p.tags,
            "split": p.split,
            "source": p.source,
            "chat": p.messages is not None,
        }
        for p in listing.prompts
    ]
    db.rollback()
    return render(
        request,
        "admin_prompts.html",
        {
            "counts": listing.counts,
            "prompts": prompts,
            "page": page,
            "page_size": PAGE_SIZE,
            "error": error,
            "errors": errors or [],
            "done": done,
        },
        block="prompts",
        status_code=status_code,
    )


@router.get("/admin/prompts")
def prompts_page(
    request: Request,
    _admin: PageAdmin,
    db: SessionDep,
    page: PageNumber = 1,
    created: int | None = None,
    duplicates: int | None = None,
    little_room: int = 0,
) -> Response:
    done = (
        {"created": created, "duplicates": duplicates or 0, "little_room": max(0, little_room)}
        if created is not None
        else None
    )
    return _page(request, db, page=max(1, page), done=done)


@router.post("/admin/prompts/upload")
async def upload_prompts(request: Request, _admin: PageAdmin, db: SessionDep, settings: SettingsDep) -> Response:
    limit_mib = settings.max_upload_bytes // (1024 * 1024)
    form = await request.form()  # a body over the upload limit was refused before (app.body_limit)
    upload = form.get("file")
    if upload is None or isinstance(upload, str) or not upload.filename:
        return _page(request, db, status_code=422, error="Choose a .jsonl or .csv file to upload.")
    data = await upload.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        return _page(request, db, status_code=413, error=f"The upload is over the {limit_mib} MiB limit.")
    return await run_in_threadpool(_import, request, db, data, upload.filename)


def _import(request: Request, db, data: bytes, filename: str) -> Response:
    try:
        result = import_prompts(db, data=data, name=filename, source="upload")
    except PromptImportError as exc:
        db.rollback()
        return _page(request, db, status_code=422, error="The file was refused.", errors=exc.lines())
    db.commit()
    little_room = f"&little_room={len(result.warnings)}" if result.warnings else ""
    return RedirectResponse(
        f"/admin/prompts?created={result.created}&duplicates={result.duplicates}{little_room}", status_code=303
    )
