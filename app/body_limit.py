"""BodySizeLimit: the one request-body limit, in front of everything (the annotate fast path included).

A body over the limit is answered 413 before anything reads it: at once when its Content-Length says so, and as
soon as the bytes counted so far pass the limit when it comes chunked. Upload routes (named by path) take the
upload maximum plus room for a multipart envelope (`max_upload_bytes`; the routes check the file or JSON they
import against the maximum itself), every other route the small `max_body_bytes`. The limits are read from the
settings per request. A request whose declared length fits goes on with its own
`receive`: that costs one header scan per request and nothing per chunk (the server delivers no more than the
declared length). Starlette's RequestBodyLimitMiddleware checks the length only when the body is first read, after
routing, and wraps every response."""

from __future__ import annotations

import html
import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.settings import Settings

MULTIPART_ENVELOPE_BYTES = 64 * 1024  # field names, boundaries, part headers and the CSRF field around a file


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a chunked body passes the limit. An HTTPException, so that a route reading its
    body answers it as any other (app.main's handler: JSON or the error page); answered here when it comes up from
    outside the routes (the annotate fast path)."""

    def __init__(self, limit: int) -> None:
        # The rest of the body is never read: the connection cannot carry another request.
        super().__init__(413, _too_large(limit), headers={"Connection": "close"})


class BodySizeLimit:
    def __init__(self, app: ASGIApp, *, settings: Settings, upload_paths: frozenset[str]) -> None:
        self.app = app
        self.settings = settings
        self.upload_paths = upload_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in self.upload_paths:
            limit = self.settings.max_upload_bytes + MULTIPART_ENVELOPE_BYTES
        else:
            limit = self.settings.max_body_bytes
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
                break
        if declared is not None:
            if not declared.isdigit():
                await _refuse(scope, send, 400, "Content-Length must be a number of bytes")
            elif int(declared) > limit:
                await _refuse(scope, send, 413, _too_large(limit))
            else:
                await self.app(scope, receive, send)
            return
        await self._counted(scope, receive, send, limit)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """No declared length (chunked, or no body at all): count the bytes as they are received."""
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await _refuse(scope, send, 413, exc.detail)


def _too_large(limit: int) -> str:
    return f"the request body is over the {limit} byte limit for this route"


async def _refuse(scope: Scope, send: Send, status: int, detail: str) -> None:
    """JSON as the API answers errors; a short page for a browser's form post."""
    accept = next((v for k, v in scope["headers"] if k == b"accept"), b"")
    if b"text/html" in accept and not scope["path"].startswith("/api/"):
        body = f"<!doctype html><title>{status}</title><h1>Refused</h1><p>{html.escape(detail)}.</p>".encode()
        content_type = b"text/html; charset=utf-8"
    else:
        body, content_type = json.dumps({"detail": detail}).encode(), b"application/json"
    # The body was not read: the connection cannot carry another request.
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
