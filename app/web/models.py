"""/admin/models: the registry — register a local model directory (checked to load), promote, roll back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from app.deps import ADMIN_PAGES, PageAdmin, SessionDep
from app.inputs import DbId
from app.services.models_registry import ModelError, list_models, promote, register_model, rollback
from app.templating import render
from app.web.form_actions import AdminForms

router = APIRouter(include_in_schema=False, dependencies=ADMIN_PAGES)


def _page(
    request: Request,
    db,
    *,
    error: str | None = None,
    notice: str | None = None,
    status_code: int = 200,
    form: dict | None = None,
) -> Response:
    ctx = {"models": list_models(db), "error": error, "notice": notice, "form": form or {}}
    db.rollback()
    return render(request, "admin_models.html", ctx, block="models", status_code=status_code)


FORMS = AdminForms("/admin/models", ModelError, _page)


@router.get("/admin/models")
def models_page(request: Request, _admin: PageAdmin, db: SessionDep, notice: str | None = None) -> Response:
    return _page(request, db, notice=notice)


@router.post("/admin/models/register")
def register(
    request: Request,
    _admin: PageAdmin,
    db: SessionDep,
    path: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    kind: Annotated[str, Form()] = "policy",
    stage: Annotated[str, Form()] = "pretrained",
) -> Response:
    # a sync endpoint: the load check's subprocess runs in the threadpool, off the event loop
    return FORMS.act(
        request,
        db,
        lambda: register_model(db, path=path.strip(), name=name.strip(), kind=kind, stage=stage),
        lambda model: FORMS.notice(f"registered+model+{model.id}"),
        form={"path": path, "name": name, "kind": kind, "stage": stage},
    )


@router.post("/admin/models/{model_id}/promote")
def promote_model(request: Request, model_id: DbId, _admin: PageAdmin, db: SessionDep) -> Response:
    return FORMS.act(
        request, db, lambda: promote(db, model_id=model_id), lambda model: FORMS.notice(f"model+{model.id}+is+current")
    )


@router.post("/admin/models/rollback")
def rollback_model(
    request: Request, _admin: PageAdmin, db: SessionDep, kind: Annotated[str, Form()] = "policy"
) -> Response:
    return FORMS.act(
        request, db, lambda: rollback(db, kind=kind), lambda model: FORMS.notice(f"rolled+back+to+model+{model.id}")
    )
