"""AnnotateFastPath: the ASGI middleware that answers the two hot requests itself, `GET /api/v1/tasks/next` and a
well-formed `POST /api/v1/annotations` of a declared small size (app.annotate.auth.hot_request), with the routes'
own work (app.annotate.work) in the same transaction (app.annotate.transaction). Anything else (another method, a
query string, a missing or malformed header, a large or chunked body, a body the model rejects) goes on to the
FastAPI routes, which stay the documented (OpenAPI) definition and give the error responses: the fast path has no
behaviour of its own. A rejected body goes on only once its token is known, so that a stranger's malformed body is
401, as everywhere else in the API, not 422."""

from __future__ import annotations

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.annotate.auth import UNKNOWN_TOKEN, hot_request, known_token, refuse_token, token_in
from app.annotate.transaction import as_api_user
from app.annotate.work import IDEMPOTENCY_KEY_MAX, IDEMPOTENCY_KEY_MIN, AnnotationIn, next_work, submit_work
from app.services.errors import ServiceError


def api_error_response(exc: HTTPException) -> Response:
    """An HTTPException as the JSON API answers it (app.main's handler uses this too; a ServiceError is answered
    as HTTPException(exc.status, str(exc)))."""
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


class AnnotateFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = hot_request(scope) if scope["type"] == "http" else None
        if hot == "next":
            await self._answer(scope, receive, send, next_work)
        elif hot == "submit":
            await self._submit(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _submit(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:
            return  # the client went away
        work = _well_formed_submit(scope, body)
        if work is None:  # not well-formed: the FastAPI route says why, from the same body, once the token is known
            token = token_in(dict(scope["headers"]).get(b"authorization", b"").decode("latin-1"))
            if token is None or not await run_in_threadpool(known_token, token):
                await refuse_token(scope, receive, send, UNKNOWN_TOKEN)
                return
            await self.app(scope, _replay(body, receive), send)
            return
        await self._answer(scope, receive, send, work)

    @staticmethod
    async def _answer(scope: Scope, receive: Receive, send: Send, work) -> None:
        try:
            response = await as_api_user(Request(scope, receive), work, core=True)
        except HTTPException as exc:
            response = api_error_response(exc)
        except ServiceError as exc:  # as app.main answers one a route lets through
            response = api_error_response(HTTPException(exc.status, str(exc)))
        await response(scope, receive, send)


def _well_formed_submit(scope: Scope, body: bytes):
    """The submit work for this request, or None when the route should answer it (not well-formed)."""
    headers: dict[bytes, bytes] = dict(scope["headers"])
    content_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
    key = headers.get(b"idempotency-key")
    if content_type != b"application/json" or key is None:
        return None
    key_text = key.decode("latin-1")
    if not IDEMPOTENCY_KEY_MIN <= len(key_text) <= IDEMPOTENCY_KEY_MAX:
        return None
    try:
        model = AnnotationIn.model_validate_json(body)
    except ValidationError:
        return None
    return submit_work(model, key_text)


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
