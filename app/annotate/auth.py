"""Who is calling the API: the bearer token's user, in one prepared query. The annotate fast path uses the lean
`TokenUser` as is; every other API route gets the ORM User by its id (app.deps.get_api_user)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app.annotate.statements import TOKEN_USER
from app.db import get_engine
from app.security import hash_token
from app.services.assignment import Db

CHALLENGE = {"WWW-Authenticate": "Bearer"}
UNKNOWN_TOKEN = "unknown or revoked token"


@dataclass(frozen=True)
class TokenUser:
    """The bearer token's user as the annotate services need it. Loading an ORM User per request cost about
    1 ms (as much as the rest of the auth); the services only read `id`."""

    id: int
    role: str


def token_in(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, else None."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def bearer_token(request: Request) -> str:
    """The request's bearer token, else 401 (with the Bearer challenge)."""
    token = token_in(request.headers.get("Authorization", ""))
    if token is None:
        raise HTTPException(401, "missing bearer token", headers=CHALLENGE)
    return token


NEXT_PATH = "/api/v1/tasks/next"
SUBMIT_PATH = "/api/v1/annotations"
# A submit up to this size is read in one go and authenticated inside its own transaction (the hot path); a larger
# or chunked one is authenticated before its body is read, as every other API request is.
HOT_SUBMIT_MAX_BYTES = 64 * 1024


def hot_request(scope: Scope) -> str | None:
    """ "next" or "submit" for the two annotate hot requests the fast path answers (app.annotate.middleware), which
    authenticate in the transaction that does their work; None for every other request."""
    if scope.get("query_string"):
        return None
    path = scope["path"][len(scope.get("root_path", "")) :] if scope.get("root_path") else scope["path"]
    if path == NEXT_PATH and scope["method"] == "GET":
        return "next"
    if path == SUBMIT_PATH and scope["method"] == "POST":
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
        if declared.isdigit() and int(declared) <= HOT_SUBMIT_MAX_BYTES:
            return "submit"
    return None


def known_token(token: str) -> bool:
    """Whether `token` is an unrevoked token of an active user: one read on a connection of its own, no
    transaction held."""
    with get_engine().connect() as conn:
        return conn.execute(TOKEN_USER, {"token_hash": hash_token(token)}).first() is not None


async def refuse_token(scope: Scope, receive: Receive, send: Send, detail: str) -> None:
    refusal = JSONResponse({"detail": detail}, status_code=401, headers=CHALLENGE)
    await refusal(scope, receive, send)


class BearerRequired:
    """Every request under `prefix` (the JSON API) is authenticated here, before anything reads its body or
    validates its path and query: FastAPI parses a route's declared body before its dependencies run, so the check
    cannot wait for them. No bearer token, or one that is unknown or revoked, is refused 401. The two hot requests
    (`hot_request`) only need a token here: they look it up in the transaction that does their work, which saves
    a query per annotation, and their bodies are small (a larger submit is checked here)."""

    def __init__(self, app: ASGIApp, *, prefix: str) -> None:
        self.app, self.prefix = app, prefix.rstrip("/") + "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            authorization = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            token = token_in(authorization.decode("latin-1"))
            if token is None:
                await refuse_token(scope, receive, send, "missing bearer token")
                return
            if hot_request(scope) is None and not await run_in_threadpool(known_token, token):
                await refuse_token(scope, receive, send, UNKNOWN_TOKEN)
                return
        await self.app(scope, receive, send)


def token_user(request: Request, db: Db) -> TokenUser:
    """The user of the request's bearer token: an unrevoked token of an active user, else 401 (with the Bearer
    challenge)."""
    row = db.execute(TOKEN_USER, {"token_hash": hash_token(bearer_token(request))}).first()
    if row is None:
        raise HTTPException(401, UNKNOWN_TOKEN, headers=CHALLENGE)
    return TokenUser(id=row[0], role=row[1])
