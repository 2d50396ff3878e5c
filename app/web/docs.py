"""OpenAPI schema and Swagger UI for admins only (a browser session or a bearer token), from the vendored
swagger-ui-dist (works offline)."""

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse

from app.deps import SettingsDep, TokenOrPageAdmin
from app.templating import render

router = APIRouter(include_in_schema=False)


def _require_enabled(settings) -> None:
    if not settings.docs_enabled:
        raise HTTPException(status_code=404, detail="API docs are disabled (RLHF_DOCS_ENABLED=0)")


@router.get("/openapi.json")
def openapi_schema(request: Request, _admin: TokenOrPageAdmin, settings: SettingsDep) -> JSONResponse:
    _require_enabled(settings)
    return JSONResponse(request.app.openapi())


@router.get("/docs")
def swagger_ui(request: Request, _admin: TokenOrPageAdmin, settings: SettingsDep) -> HTMLResponse:
    """FastAPI's get_swagger_ui_html starts Swagger UI from an inline script, which the Content-Security-Policy
    refuses: this page starts it from static/js/swagger_init.js."""
    _require_enabled(settings)
    return render(request, "docs.html")
