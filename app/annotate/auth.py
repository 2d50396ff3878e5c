"""Who is calling the API: the bearer token's user, in one prepared query. The annotate fast path uses the lean
`TokenUser` as is; every other API route gets the ORM User by its id (app.deps.get_api_user)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app.annotate.statements import TOKEN_USER
from app.security import hash_token
from app.services.assignment import Db

CHALLENGE = {"WWW-Authenticate": "Bearer"}


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


class BearerRequired:
    """Every request under `prefix` (the JSON API) without a bearer token is refused 401 here, before anything
    reads its body or validates its path and query: FastAPI parses a route's declared body before its
    dependencies run, so the check cannot wait for them. Whether the token is valid is checked where the route
    opens its transaction."""

    def __init__(self, app: ASGIApp, *, prefix: str) -> None:
        self.app, self.prefix = app, prefix.rstrip("/") + "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            authorization = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            if token_in(authorization.decode("latin-1")) is None:
                refusal = JSONResponse({"detail": "missing bearer token"}, status_code=401, headers=CHALLENGE)
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def token_user(request: Request, db: Db) -> TokenUser:
    """The user of the request's bearer token: an unrevoked token of an active user, else 401 (with the Bearer
    challenge)."""
    row = db.execute(TOKEN_USER, {"token_hash": hash_token(bearer_token(request))}).first()
    if row is None:
        raise HTTPException(401, "unknown or revoked token", headers=CHALLENGE)
    return TokenUser(id=row[0], role=row[1])
