"""Browser login and logout: a signed HttpOnly SameSite=Lax cookie, CSRF on the form, throttled failures."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.deps import BrowserSessionDep, SessionDep, SettingsDep, get_page_user_optional, verify_csrf
from app.models import User
from app.security import BrowserSession
from app.services.users import LoginThrottled, authenticate, log_out
from app.templating import attach_pending_cookie, render

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False, dependencies=[Depends(verify_csrf)])


def _safe_next(target: str | None) -> str:
    # Only local paths: an open redirect would let a link log someone in and send them elsewhere.
    return target if target and target.startswith("/") and not target.startswith("//") else "/"


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.get("/login")
def login_page(
    request: Request,
    _browser: BrowserSessionDep,
    user: Annotated[User | None, Depends(get_page_user_optional)],
    next: str = "/",
) -> Response:
    if user is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return render(request, "login.html", {"next": _safe_next(next), "error": None})


@router.post("/login")
def login(
    request: Request,
    db: SessionDep,
    settings: SettingsDep,
    _browser: BrowserSessionDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    try:
        user = authenticate(
            db,
            username=username.strip(),
            password=password,
            address=_client_address(request),
            max_failures=settings.login_max_failures,
            window_s=settings.login_window_s,
        )
    except LoginThrottled:
        return render(
            request,
            "login.html",
            {"next": _safe_next(next), "error": "Too many failed logins. Wait a minute and try again."},
            status_code=429,
        )
    if user is None:
        log.info("login failed for %r from %s", username[:64], _client_address(request))  # never the password
        return render(
            request,
            "login.html",
            {"next": _safe_next(next), "error": "Wrong username or password, or the account is deactivated."},
            status_code=401,
        )
    # A fresh CSRF token at login: a token seen before authentication is never reused after it.
    fresh = BrowserSession.anonymous()
    request.state.pending_session_cookie = request.app.state.session_signer.dumps(
        BrowserSession(user_id=user.id, csrf=fresh.csrf, session_version=user.session_version)
    )
    response = RedirectResponse(_safe_next(next), status_code=303)
    attach_pending_cookie(request, response)
    return response


@router.post("/logout")
def logout(db: SessionDep, browser: BrowserSessionDep) -> Response:
    if browser.user_id is not None:
        # every session of the user ends, this cookie's copies included (a saved cookie no longer opens a page)
        log_out(db, user_id=browser.user_id, session_version=browser.session_version)
        db.commit()
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie("rlhf_session", path="/")
    return response
