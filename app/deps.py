"""FastAPI dependencies: database session, browser session and CSRF, page users, API users, roles; the export
query the API and the admin page share, and the response that serves an export."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask

from app.annotate.auth import token_user
from app.db import get_sessionmaker
from app.models import User
from app.security import CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE, BrowserSession, SessionSigner, csrf_matches
from app.services.exports import ExportDownload
from app.settings import Settings, get_settings
from domain.vocabulary import REVIEW_ROLES

UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class LoginRequired(Exception):
    """Raised by page dependencies; answered with a redirect to /login (or HX-Redirect for htmx)."""


def get_db() -> Iterator[Session]:
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.close()


# closed when the route returns, before the response is sent: no transaction waits on a slow client
SessionDep = Annotated[Session, Depends(get_db, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_browser_session(request: Request) -> BrowserSession:
    signer: SessionSigner = request.app.state.session_signer
    session = signer.loads(request.cookies.get(SESSION_COOKIE))
    if session is None:
        session = BrowserSession.anonymous()
        request.state.pending_session_cookie = signer.dumps(session)
    request.state.csrf_token = session.csrf
    return session


BrowserSessionDep = Annotated[BrowserSession, Depends(get_browser_session)]


async def verify_csrf(request: Request, browser: BrowserSessionDep) -> None:
    """Every state-changing browser request carries the session's CSRF token: in the X-CSRF-Token header (htmx
    sends it from base.html's hx-headers), else in the form, which is parsed only then. Page routers check who is
    calling before this (ADMIN_PAGES, USER_PAGES): an anonymous or annotator upload to an admin page is refused
    before its body is read. (FastAPI reads a route's declared Form() fields before any dependency, within the
    small body limit.)"""
    if request.method not in UNSAFE_METHODS:
        return
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()  # Starlette caches it: the endpoint's Form() parameters still work
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not csrf_matches(browser.csrf, given):
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token: reload the page and try again")


def get_page_user_optional(request: Request, db: SessionDep, browser: BrowserSessionDep) -> User | None:
    if browser.user_id is None:
        return None
    user = db.get(User, browser.user_id)
    # end the lookup's transaction now: on SQLite it holds the writer gate, which the rest of the request
    # (reading a form, rendering a page) must not keep from the annotate API (expire_on_commit=False: user stays loaded)
    db.commit()
    if user is None or not user.is_active or user.session_version != browser.session_version:
        return None  # an older version: the user logged out, changed password or was deactivated since
    request.state.user = user
    return user


def get_page_user(user: Annotated[User | None, Depends(get_page_user_optional)]) -> User:
    if user is None:
        raise LoginRequired()
    return user


PageUser = Annotated[User, Depends(get_page_user)]


def _admins_only(user: User) -> User:
    if user.role != "admin":
        raise HTTPException(status_code=403, detail="admins only")
    return user


def get_page_admin(user: PageUser) -> User:
    return _admins_only(user)


PageAdmin = Annotated[User, Depends(get_page_admin)]


def _reviewers_only(user: User) -> User:
    if user.role not in REVIEW_ROLES:
        raise HTTPException(status_code=403, detail="reviewers and admins only")
    return user


def get_page_reviewer(user: PageUser) -> User:
    return _reviewers_only(user)


PageReviewer = Annotated[User, Depends(get_page_reviewer)]

# A page router's dependencies: who is calling first, so that an anonymous or non-admin request is refused before
# the CSRF check reads its form (an upload's multipart body is spooled to disk as it is parsed).
ADMIN_PAGES = [Depends(get_page_admin), Depends(verify_csrf)]
USER_PAGES = [Depends(get_page_user), Depends(verify_csrf)]
REVIEW_PAGES = [Depends(get_page_reviewer), Depends(verify_csrf)]


# Declares the API's bearer tokens in the OpenAPI schema, so /docs offers "Authorize"; the check itself is
# app.annotate.auth's (auto_error=False: its own 401s stand).
bearer_scheme = HTTPBearer(
    auto_error=False, description="An API token: `rlhf tokens create --username NAME` or the users page."
)


def get_api_user(
    request: Request,
    db: SessionDep,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)] = None,
) -> User:
    """The bearer token's user (app.annotate.auth's rule and 401s) as the ORM row the admin routes work with."""
    try:
        user = db.get(User, token_user(request, db).id)
    finally:
        # end the lookup's transaction now, as the page user's does: the route's slow work (a model's load check,
        # an export) must not hold SQLite's writer gate or a PostgreSQL connection idle in transaction
        db.commit()
    request.state.user = user
    return user


ApiUser = Annotated[User, Depends(get_api_user)]


def get_api_admin(user: ApiUser) -> User:
    return _admins_only(user)


ApiAdmin = Annotated[User, Depends(get_api_admin)]


def get_api_reviewer(user: ApiUser) -> User:
    return _reviewers_only(user)


ApiReviewer = Annotated[User, Depends(get_api_reviewer)]


def get_token_or_page_admin(request: Request, db: SessionDep, browser: BrowserSessionDep) -> User:
    """An admin by bearer token when the request carries one (a script fetching the OpenAPI schema), else by
    browser session (Swagger UI): the API's 401/403, or the pages' redirect to the login form."""
    if "authorization" in request.headers:
        return get_api_admin(get_api_user(request, db))
    return get_page_admin(get_page_user(get_page_user_optional(request, db, browser)))


TokenOrPageAdmin = Annotated[User, Depends(get_token_or_page_admin)]


@dataclass
class ExportQuery:
    """An export's filters and file shape as query parameters, named as `export_download` takes them (`annotator`
    and `csv` are their names in the URL). The page's form sends empty strings for unset fields and its numbers as
    text: the service reads both. The API declares its own types and descriptions over these (app.api.exports)."""

    since: str | None = None
    until: str | None = None
    until_id: str | None = None
    source: str | None = None
    annotators: Annotated[list[str] | None, Query(alias="annotator")] = None
    split: str | None = None
    min_agreement: str | None = None
    include_ties: bool = False
    as_csv: Annotated[bool, Query(alias="csv")] = False
    annotator_weighting: str | None = None
    labels: str | None = None


def export_response(download: ExportDownload) -> FileResponse:
    """The written export, with its digest and row count headers; the file is removed once sent."""
    return FileResponse(
        download.path,
        filename=download.filename,
        media_type=download.media_type,
        headers=download.headers,
        background=BackgroundTask(download.remove),
    )
