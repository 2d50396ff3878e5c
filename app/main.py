"""The FastAPI application: `create_app()` (uvicorn factory)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from app import api, web
from app.annotate.auth import BearerRequired
from app.annotate.middleware import AnnotateFastPath, api_error_response
from app.body_limit import BodySizeLimit
from app.db import check_migrated, get_engine
from app.deps import LoginRequired
from app.oidc import FlowCookie, OidcClient
from app.security import SessionSigner
from app.security_headers import SecurityHeaders
from app.services.errors import ServiceError
from app.settings import get_settings, keep_private
from app.templating import STATIC_DIR, render

API_PREFIX = "/api/v1"
# The routes that take a file (or a JSON list of its lines): the upload maximum; every other body is small.
UPLOAD_PATHS = frozenset({"/api/v1/tasks", "/api/v1/prompts", "/admin/tasks/upload", "/admin/prompts/upload"})


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith(API_PREFIX) and "text/html" in request.headers.get("accept", "")


async def _login_required(request: Request, _exc: LoginRequired) -> Response:
    target = f"/login?next={quote(request.url.path)}"
    if request.headers.get("HX-Request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if _wants_html(request) and exc.status_code >= 400:
        return render(
            request,
            "error.html",
            {"status": exc.status_code, "detail": exc.detail},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )
    return api_error_response(exc)


async def _service_error(request: Request, exc: ServiceError) -> Response:
    """A refusal a route let through: its own status and message (the session's transaction rolls back on close)."""
    return await _http_error(request, HTTPException(status_code=exc.status, detail=str(exc)))


def create_app(*, check_database: bool = True) -> FastAPI:
    settings = get_settings()
    keep_private(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if check_database:
            check_migrated(get_engine())  # refuse to serve an un-migrated database
        yield

    app = FastAPI(
        title="rlhf-studio",
        version="0.1.0",
        description="The whole RLHF loop: tasks, annotations, exports, jobs and training rounds. "
        "API calls take `Authorization: Bearer <token>` (tokens from `rlhf tokens create` or the users page).",
        lifespan=lifespan,
        docs_url=None,  # served by app.web.docs, for admins only, with the vendored Swagger UI
        redoc_url=None,
        openapi_url=None,
    )
    app.state.session_signer = SessionSigner(settings.session_secret(), settings.session_max_age_s)
    # single sign-on beside passwords when an issuer is configured (nothing is fetched from it until a sign-in)
    app.state.oidc = OidcClient(settings) if settings.oidc_enabled else None
    app.state.oidc_flow_cookie = FlowCookie(settings.session_secret())
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ServiceError, _service_error)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"loc": list(e.get("loc", [])), "msg": e.get("msg", "")} for e in exc.errors()]
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors)
        return JSONResponse({"detail": message or "invalid request", "errors": errors}, status_code=422)

    # add_middleware wraps what is there: the last one added sees the request first.
    app.add_middleware(AnnotateFastPath)  # the annotate hot loop skips the routing (see app.annotate)
    app.add_middleware(BearerRequired, prefix=API_PREFIX)  # no token: 401 before any body is read
    app.add_middleware(BodySizeLimit, settings=settings, upload_paths=UPLOAD_PATHS)
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for router in [*api.ROUTERS, *web.ROUTERS]:
        app.include_router(router)
    return app
