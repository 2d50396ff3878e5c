"""Jinja2 pages; htmx fragments are blocks of the page template (jinja2-fragments), never copies."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Asset:
    cdn: str  # pinned to the version in static/vendor
    vendored: str  # under static/: the same npm package's file, byte for byte
    integrity: str  # SRI of that file: the browser refuses a CDN copy that differs
    global_name: str  # what the library defines: asset_fallback.js loads the vendored copy when it is missing


# Front-end files: from the CDN by default (integrity-checked, the vendored copy when the CDN cannot be reached),
# only from static/vendor/ with settings.offline_assets. Refresh: static/vendor/README.md.
ASSETS = {
    "htmx": Asset(
        "https://unpkg.com/htmx.org@2.0.11/dist/htmx.min.js",
        "vendor/htmx/htmx.min.js",
        "sha384-2OatzQy1H+Zd/IIrjr1TcuDGqLXeHhbooAyJY1KdQMKnr4LZ22k31GBLdYKHmVjg",
        "htmx",
    ),
    "sortable": Asset(
        "https://unpkg.com/sortablejs@1.15.7/Sortable.min.js",
        "vendor/sortablejs/Sortable.min.js",
        "sha384-DgmC6Xe2bSN2WjTDXzWYbUbxyhNP+NNkGDR/g78pCXV7E7rcVTGxVg0uIVCUUcBc",
        "Sortable",
    ),
    "chartjs": Asset(
        "https://unpkg.com/chart.js@4.6.1/dist/chart.umd.min.js",
        "vendor/chartjs/chart.umd.min.js",
        "sha384-Emf5ZVIUiarAdhkgtqK+5/Z5qIvM6QoVrS+qAVtfyZVuD5lIHrac0me485+Antp0",
        "Chart",
    ),
}
FALLBACK_SCRIPT = "/static/js/asset_fallback.js"

# html=False: any HTML in a response is shown as text, never run. No images: a remote image in a prompt (a
# tracking pixel) would be fetched by every annotator's browser and reveal their addresses; `![alt](url)` shows as
# a link instead.
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table").disable("image")


def render_markdown(text: str | None) -> Markup:
    return Markup(_markdown.render(text or ""))


def asset_script(name: str) -> Markup:
    """The <script> tags of a front-end library: the CDN copy with its integrity hash, then the fallback that loads
    the vendored copy when the CDN one did not run (both parser-blocking, so the library is there for what follows);
    only the vendored copy with settings.offline_assets. External files only: no inline script (CSP)."""
    asset = ASSETS[name]
    vendored = f"/static/{asset.vendored}"
    if get_settings().offline_assets:
        return Markup('<script src="{}"></script>').format(vendored)
    return Markup(
        '<script src="{}" integrity="{}" crossorigin="anonymous"></script>\n'
        '<script src="{}" data-global="{}" data-src="{}"></script>'
    ).format(asset.cdn, asset.integrity, FALLBACK_SCRIPT, asset.global_name, vendored)


templates = Jinja2Blocks(directory=str(TEMPLATES_DIR))
templates.env.globals["asset_script"] = asset_script
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
