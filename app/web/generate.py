"""/admin/generate: a generation request form (defaults shown) -> a `generate` job."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from app.deps import ADMIN_PAGES, PageAdmin, SessionDep
from app.services.generation import (
    GenerationError,
    GenerationRequest,
    generation_choices,
    parse_generation_request,
    request_generation,
)
from app.templating import render
from domain.vocabulary import SELECTIONS

router = APIRouter(include_in_schema=False, dependencies=ADMIN_PAGES)


def _page(request: Request, db, *, values: dict, error: str | None = None, status_code: int = 200) -> Response:
    ctx = {**vars(generation_choices(db)), "values": values, "error": error, "selections": SELECTIONS}
    db.rollback()
    return render(request, "admin_generate.html", ctx, status_code=status_code)


@router.get("/admin/generate")
def generate_page(request: Request, _admin: PageAdmin, db: SessionDep) -> Response:
    return _page(request, db, values=GenerationRequest().model_dump())


def _request_from_form(form) -> GenerationRequest:
    # An empty field means its default (the form shows the defaults; a cleared box falls back to them).
    values = {k: str(v).strip() for k, v in form.items() if k != "csrf_token" and str(v).strip() != ""}
    return parse_generation_request(values)


@router.post("/admin/generate")
async def generate(request: Request, admin: PageAdmin, db: SessionDep) -> Response:
    form = await request.form()
    values = {**GenerationRequest().model_dump(), **{k: v for k, v in form.items() if k != "csrf_token"}}

    def work() -> Response:  # off the loop: a write transaction may wait for the SQLite writer gate
        try:
            req = _request_from_form(form)
            job = request_generation(db, request=req, created_by_id=admin.id)
        except GenerationError as exc:
            db.rollback()
            return _page(request, db, values=values, error=str(exc), status_code=exc.status)
        db.commit()
        return RedirectResponse(f"/admin/jobs/{job.id}", status_code=303)

    return await run_in_threadpool(work)
