"""OpenAPI schema and Swagger UI for admins only (a browser session or a bearer token), from the vendored
swagger-ui-dist (works offline)."""

from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from app.deps import SettingsDep, TokenOrPageAdmin

router = APIRouter(include_in_schema=False)


def _require_enabled(settings) -> None:
    if not settings.docs_enabled:
        raise HTTPException(status_code=404, detail="API docs are disabled (RLHF_DOCS_ENABLED=0)")


@router.get("/openapi.json")
def openapi_schema(request: Request, _admin: TokenOrPageAdmin, settings: SettingsDep) -> JSONResponse:
    _require_enabled(settings)
    return JSONResponse(request.app.openapi())


@router.get("/docs")
def swagger_ui(_admin: TokenOrPageAdmin, settings: SettingsDep) -> HTMLResponse:
    _require_enabled(settings)
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="rlhf-studio API",
        swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
        swagger_favicon_url="/static/vendor/swagger-ui/favicon-32x32.png",
    )
