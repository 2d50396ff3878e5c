"""Jinja2 pages; htmx fragments are blocks of the page template (jinja2-fragments), never copies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2_fragments.fastapi import Jinja2Blocks
from markdown_it import MarkdownIt
from markupsafe import Markup

from app.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"

# Front-end files: from the CDN by default, from static/vendor/ (the same npm packages) when offline.
ASSETS = {
    "htmx": ("https://unpkg.com/htmx.org@2.0.11/dist/htmx.min.js", "vendor/htmx/htmx.min.js"),
    "sortable": ("https://unpkg.com/sortablejs@1.15.7/Sortable.min.js", "vendor/sortablejs/Sortable.min.js"),
    "chartjs": ("https://unpkg.com/chart.js@4.6.1/dist/chart.umd.min.js", "vendor/chartjs/chart.umd.min.js"),
}

# html=False: any HTML in a response is shown as text, never run. No images: a remote image in a prompt (a
# tracking pixel) would be fetched by every annotator's browser and reveal their addresses; `![alt](url)` shows as
# a link instead.
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table").disable("image")


def render_markdown(text: str | None) -> Markup:
    return Markup(_markdown.render(text or ""))


def asset_url(name: str) -> str:
    cdn, vendored = ASSETS[name]
    return f"/static/{vendored}" if get_settings().offline_assets else cdn


templates = Jinja2Blocks(directory=str(TEMPLATES_DIR))
templates.env.globals["asset_url"] = asset_url
templates.env.filters["markdown"] = render_markdown


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true" and request.headers.get("HX-History-Restore-Request") != "true"


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    block: str | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """The whole page, or only `block` of it when htmx asks: one URL serves both."""
    ctx = {
        "request": request,
        "user": getattr(request.state, "user", None),
        "csrf_token": getattr(request.state, "csrf_token", ""),
        **(context or {}),
    }
    kwargs: dict[str, Any] = {"status_code": status_code, "headers": headers}
    if block and is_htmx(request):
        kwargs["block_name"] = block
    response = templates.TemplateResponse(request, name, ctx, **kwargs)
    attach_pending_cookie(request, response)
    return response


def attach_pending_cookie(request: Request, response) -> None:
    """A browser session created during this request (first visit, login) is sent with the response."""
    cookie = getattr(request.state, "pending_session_cookie", None)
    if cookie is not None:
        settings = get_settings()
        response.set_cookie(
            "rlhf_session",
            cookie,
            max_age=settings.session_max_age_s,
            httponly=True,
            samesite="lax",
            secure=settings.secure_cookies,
            path="/",
        )
