"""SecurityHeaders: the headers every response carries. Scripts come only from this server and the CDN that
app.templating loads its assets from (no inline script, no eval); no page may be framed; types are never sniffed;
no Referer leaves the site. Styles may be inline (htmx adds its indicator style; a few templates use style="")."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.templating import ASSETS


def content_security_policy() -> str:
    cdn = sorted({f"{urlsplit(a.cdn).scheme}://{urlsplit(a.cdn).netloc}" for a in ASSETS.values()})
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self' {' '.join(cdn)}",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = [
            (b"content-security-policy", content_security_policy().encode()),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *self.headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)
