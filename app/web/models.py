"""/admin/models: the registry — register a local model directory (checked to load), promote, roll back."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.deps import PageAdmin, SessionDep, verify_csrf
from app.services.models_registry import ModelError, list_models, promote, register_model, rollback
from app.templating import render
from app.web.form_actions import commit_or_show_error

router = APIRouter(include_in_schema=False, dependencies=[Depends(verify_csrf)])


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
    return commit_or_show_error(
        db,
        lambda: register_model(db, path=path.strip(), name=name.strip(), kind=kind, stage=stage),
        errors=ModelError,
        page=partial(_page, request, db, form={"path": path, "name": name, "kind": kind, "stage": stage}),
        done=lambda model: RedirectResponse(f"/admin/models?notice=registered+model+{model.id}", status_code=303),
    )


@router.post("/admin/models/{model_id}/promote")
def promote_model(request: Request, model_id: int, _admin: PageAdmin, db: SessionDep) -> Response:
    return commit_or_show_error(
        db,
        lambda: promote(db, model_id=model_id),
        errors=ModelError,
        page=partial(_page, request, db),
        done=lambda model: RedirectResponse(f"/admin/models?notice=model+{model.id}+is+current", status_code=303),
    )


@router.post("/admin/models/rollback")
def rollback_model(
    request: Request, _admin: PageAdmin, db: SessionDep, kind: Annotated[str, Form()] = "policy"
) -> Response:
    return commit_or_show_error(
        db,
        lambda: rollback(db, kind=kind),
        errors=ModelError,
        page=partial(_page, request, db),
        done=lambda model: RedirectResponse(f"/admin/models?notice=rolled+back+to+model+{model.id}", status_code=303),
    )
