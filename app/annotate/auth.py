"""Who is calling the API: the bearer token's user, in one prepared query. The annotate fast path uses the lean
`TokenUser` as is; every other API route gets the ORM User by its id (app.deps.get_api_user)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException
from starlette.requests import Request

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


def bearer_token(request: Request) -> str:
    """The request's bearer token, else 401 (with the Bearer challenge)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "missing bearer token", headers=CHALLENGE)
    return token.strip()


def token_user(request: Request, db: Db) -> TokenUser:
    """The user of the request's bearer token: an unrevoked token of an active user, else 401 (with the Bearer
    challenge)."""
    row = db.execute(TOKEN_USER, {"token_hash": hash_token(bearer_token(request))}).first()
    if row is None:
        raise HTTPException(401, "unknown or revoked token", headers=CHALLENGE)
    return TokenUser(id=row[0], role=row[1])
