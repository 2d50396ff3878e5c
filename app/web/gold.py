"""/admin/gold: gold tasks with their answers, marking a task gold, and annotators' qualification (reset, allow)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from app.deps import ADMIN_PAGES, PageAdmin, SessionDep, SettingsDep
from app.inputs import DbId
from app.services.errors import ServiceError
from app.services.gold import (
    allow_annotator,
    gold_overview,
    mark_gold,
    parse_answer_text,
    reset_qualification,
    task_number,
    unmark_gold,
)
from app.settings import get_settings
from app.templating import render
from app.web.form_actions import AdminForms

router = APIRouter(include_in_schema=False, dependencies=ADMIN_PAGES)


def _page(request: Request, db, *, error: str | None = None, notice: str | None = None, status_code: int = 200):
    overview = gold_overview(db)
    db.rollback()
    ctx = {"overview": overview, "error": error, "notice": notice, "settings": get_settings()}
    return render(request, "admin_gold.html", ctx, status_code=status_code)


FORMS = AdminForms("/admin/gold", ServiceError, _page)


@router.get("/admin/gold")
def gold_page(request: Request, _admin: PageAdmin, db: SessionDep, notice: str | None = None) -> Response:
    return _page(request, db, notice=notice)


@router.post("/admin/gold")
def mark(
    request: Request,
    _admin: PageAdmin,
    db: SessionDep,
    task_id: Annotated[str, Form()] = "",
    answer: Annotated[str, Form()] = "",
    explanation: Annotated[str, Form()] = "",
    qualification: Annotated[bool, Form()] = False,
) -> Response:
    return FORMS.act(
        request,
        db,
        lambda: mark_gold(
            db,
            task_id=task_number(task_id),
            answer=parse_answer_text(answer),
            explanation=explanation or None,
            qualification=qualification,
        ),
        lambda row: FORMS.notice(f"task+{row.task_id}+is+gold"),
    )


@router.post("/admin/gold/{task_id}/unmark")
def unmark(request: Request, task_id: DbId, _admin: PageAdmin, db: SessionDep) -> Response:
    return FORMS.act(
        request, db, lambda: unmark_gold(db, task_id=task_id), lambda _: FORMS.notice(f"task+{task_id}+is+regular")
    )


@router.post("/admin/gold/qualification/{user_id}/reset")
def reset(request: Request, user_id: DbId, _admin: PageAdmin, db: SessionDep) -> Response:
    return FORMS.act(
        request,
        db,
        lambda: reset_qualification(db, user_id=user_id),
        lambda _: FORMS.notice(f"qualification+of+user+{user_id}+reset"),
    )


@router.post("/admin/gold/qualification/{user_id}/allow")
def allow(request: Request, user_id: DbId, admin: PageAdmin, db: SessionDep, settings: SettingsDep) -> Response:
    return FORMS.act(
        request,
        db,
        lambda: allow_annotator(db, user_id=user_id, admin_id=admin.id, threshold=settings.qualification_threshold),
        lambda _: FORMS.notice(f"user+{user_id}+allowed"),
    )
