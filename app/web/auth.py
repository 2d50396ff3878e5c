"""Browser login and logout: a signed HttpOnly SameSite=Lax cookie, CSRF on the form, throttled failures; single
sign-on by OpenID Connect beside passwords when it is configured (app.oidc)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from app.deps import BrowserSessionDep, SessionDep, SettingsDep, get_page_user_optional, verify_csrf
from app.models import User
from app.oidc import FLOW_COOKIE, FLOW_MAX_AGE_S, FLOW_PATH, Flow, OidcClient, OidcError
from app.security import BrowserSession
from app.services.errors import ServiceError
from app.services.users import LoginThrottled, authenticate, log_out, sign_in_with_oidc
from app.templating import attach_pending_cookie, render

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False, dependencies=[Depends(verify_csrf)])


def _safe_next(target: str | None) -> str:
    # Only local paths: an open redirect would let a link log someone in and send them elsewhere.
    return target if target and target.startswith("/") and not target.startswith("//") else "/"


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _login_page(request: Request, *, next: str, error: str | None = None, status_code: int = 200) -> Response:
    sso = request.app.state.oidc is not None
    context = {"next": _safe_next(next), "error": error, "sso": sso}
    return render(request, "login.html", context, status_code=status_code)


def _logged_in(request: Request, user: User, next: str) -> Response:
    # A fresh CSRF token at login: a token seen before authentication is never reused after it.
    fresh = BrowserSession.anonymous()
    request.state.pending_session_cookie = request.app.state.session_signer.dumps(
        BrowserSession(user_id=user.id, csrf=fresh.csrf, session_version=user.session_version)
    )
    response = RedirectResponse(_safe_next(next), status_code=303)
    attach_pending_cookie(request, response)
    return response


@router.get("/login")
def login_page(
    request: Request,
    _browser: BrowserSessionDep,
    user: Annotated[User | None, Depends(get_page_user_optional)],
    next: str = "/",
) -> Response:
    if user is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _login_page(request, next=next)


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
        return _login_page(
            request, next=next, error="Too many failed logins. Wait a minute and try again.", status_code=429
        )
    if user is None:
        log.info("login failed for %r from %s", username[:64], _client_address(request))  # never the password
        return _login_page(
            request, next=next, error="Wrong username or password, or the account is deactivated.", status_code=401
        )
    return _logged_in(request, user, next)


def get_oidc(request: Request) -> OidcClient:
    client = request.app.state.oidc
    if client is None:
        raise HTTPException(status_code=404, detail="single sign-on is not configured")
    return client


OidcDep = Annotated[OidcClient, Depends(get_oidc)]


def _callback_url(request: Request) -> str:
    return str(request.url_for("oidc_callback"))


@router.get("/auth/oidc/login")
def oidc_login(
    request: Request, oidc: OidcDep, settings: SettingsDep, _browser: BrowserSessionDep, next: str = "/"
) -> Response:
    """Sends the browser to the provider; the flow's secrets wait in a cookie only the callback's path receives (a
    link, not a form: the page's CSP allows forms to post to this site only, redirects included)."""
    flow = Flow.start(_safe_next(next))
    try:
        url = oidc.authorization_url(flow, redirect_uri=_callback_url(request))
    except OidcError as exc:
        return _login_page(request, next=next, error=exc.message, status_code=exc.status)
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        FLOW_COOKIE,
        request.app.state.oidc_flow_cookie.dumps(flow),
        max_age=FLOW_MAX_AGE_S,
        httponly=True,
        samesite="lax",  # sent on the provider's top-level redirect back, not on other sites' requests
        secure=settings.secure_cookies,
        path=FLOW_PATH,
    )
    return response


@router.get("/auth/oidc/callback", name="oidc_callback")
def oidc_callback(
    request: Request,
    db: SessionDep,
    settings: SettingsDep,
    oidc: OidcDep,
    _browser: BrowserSessionDep,
    state: str = "",
    code: str = "",
    error: str = "",
    error_description: str = "",
) -> Response:
    """The provider sends the browser back here: the code becomes a verified ID token, and that a session. The flow
    cookie is spent either way (a callback counts once); a refusal stores nothing and shows the login page."""
    flow = request.app.state.oidc_flow_cookie.loads(request.cookies.get(FLOW_COOKIE))
    try:
        if flow is None:
            raise OidcError("No sign-in was started in this browser in the last 10 minutes: start it again.")
        if error:
            raise OidcError(f"The sign-in provider refused: {(error_description or error)[:200]}", status=403)
        claims = oidc.verified_claims(flow, state=state, code=code, redirect_uri=_callback_url(request))
        user = sign_in_with_oidc(db, issuer=oidc.issuer, claims=claims, role_claim=settings.oidc_role_claim)
        db.commit()
    except ServiceError as exc:
        db.rollback()
        log.info("single sign-on refused from %s: %s", _client_address(request), exc.message)
        response = _login_page(request, next=flow.next if flow else "/", error=exc.message, status_code=exc.status)
    else:
        response = _logged_in(request, user, flow.next)
    response.delete_cookie(FLOW_COOKIE, path=FLOW_PATH)
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
