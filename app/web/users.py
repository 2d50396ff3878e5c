"""/admin/users: create and deactivate annotators, reset passwords, create and revoke API tokens, see each
annotator's figures and careless-annotator flags, and exclude a flagged annotator's labels (or include them again)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from app.deps import ADMIN_PAGES, PageAdmin, SessionDep
from app.inputs import DbId
from app.models import ApiToken
from app.services.annotator_signals import current_signals
from app.services.stats import annotator_figures
from app.services.users import (
    UserError,
    create_token,
    create_user,
    get_user,
    list_tokens,
    list_users,
    revoke_token,
    update_user,
)
from app.templating import render
from app.web.form_actions import AdminForms
from domain.vocabulary import ROLES

router = APIRouter(include_in_schema=False, dependencies=ADMIN_PAGES)


def _page(
    request: Request,
    db,
    *,
    error: str | None = None,
    notice: str | None = None,
    new_token: str | None = None,
    status_code: int = 200,
) -> Response:
    tokens: dict[int, list[ApiToken]] = {}
    for t in list_tokens(db):
        tokens.setdefault(t.user_id, []).append(t)
    ctx = {
        "users": list_users(db),
        "tokens": tokens,
        "figures": annotator_figures(db),
        "signals": current_signals(db),
        "error": error,
        "notice": notice,
        "new_token": new_token,
        "roles": ROLES,
    }
    db.rollback()
    return render(request, "admin_users.html", ctx, block="users", status_code=status_code)


FORMS = AdminForms("/admin/users", UserError, _page)


@router.get("/admin/users")
def users_page(request: Request, _admin: PageAdmin, db: SessionDep, notice: str | None = None) -> Response:
    return _page(request, db, notice=notice)


@router.post("/admin/users")
def create(
    request: Request,
    _admin: PageAdmin,
    db: SessionDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "annotator",
) -> Response:
    return FORMS.act(
        request,
        db,
        lambda: create_user(db, username=username.strip(), role=role, password=password),
        lambda user: FORMS.notice(f"created+{user.username}"),
    )


@router.post("/admin/users/{user_id}/active")
def activate(
    request: Request, user_id: DbId, admin: PageAdmin, db: SessionDep, active: Annotated[bool, Form()] = False
) -> Response:
    notice = "activated" if active else "deactivated"
    return FORMS.act(
        request,
        db,
        lambda: update_user(db, user_id=user_id, by=admin, is_active=active),
        lambda user: FORMS.notice(f"{notice}+{user.username}"),
    )


@router.post("/admin/users/{user_id}/labels")
def exclude_labels(
    request: Request, user_id: DbId, admin: PageAdmin, db: SessionDep, excluded: Annotated[bool, Form()] = False
) -> Response:
    """One action, reversible: the user's labels leave (or come back to) every round and export; none is deleted."""
    notice = "labels+excluded+for" if excluded else "labels+included+again+for"
    return FORMS.act(
        request,
        db,
        lambda: update_user(db, user_id=user_id, by=admin, labels_excluded=excluded),
        lambda user: FORMS.notice(f"{notice}+{user.username}"),
    )


@router.post("/admin/users/{user_id}/password")
def reset_password(
    request: Request, user_id: DbId, admin: PageAdmin, db: SessionDep, password: Annotated[str, Form()] = ""
) -> Response:
    return FORMS.act(
        request,
        db,
        lambda: update_user(db, user_id=user_id, by=admin, password=password),
        lambda user: FORMS.notice(f"password+reset+for+{user.username}"),
    )


@router.post("/admin/users/{user_id}/tokens")
def new_token(
    request: Request, user_id: DbId, _admin: PageAdmin, db: SessionDep, name: Annotated[str, Form()] = ""
) -> Response:
    # The token is shown once, in this response only (never in a URL or a log).
    return FORMS.act(
        request,
        db,
        lambda: create_token(db, user=get_user(db, user_id=user_id), name=name.strip()[:128]),
        lambda created: _page(
            request,
            db,
            notice=f"token {created[0].id} created: copy it now, it is not shown again",
            new_token=created[1],
        ),
    )


@router.post("/admin/users/{user_id}/tokens/{token_id}/revoke")
def revoke(request: Request, user_id: DbId, token_id: DbId, _admin: PageAdmin, db: SessionDep) -> Response:
    return FORMS.act(
        request,
        db,
        lambda: revoke_token(db, token_id=token_id, user_id=user_id),
        lambda _: FORMS.notice(f"revoked+token+{token_id}"),
    )
