"""/api/v1/users and /api/v1/users/{id}/tokens: create and deactivate annotators, reset passwords, API tokens.
Admins only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from app.deps import ApiAdmin, SessionDep
from app.inputs import DbId, Text
from app.models import ApiToken, User
from app.services.annotator_signals import current_signals
from app.services.users import create_token, create_user, get_user, list_tokens, list_users, revoke_token, update_user
from domain.vocabulary import ROLES

router = APIRouter(prefix="/api/v1", tags=["users"])


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: Text = Field(max_length=64)
    role: str = Field("annotator", description=f"{', '.join(ROLES)}")
    password: Text = Field(min_length=1, max_length=1024)


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"labels_excluded": True}]})
    is_active: bool | None = None
    password: Text | None = Field(None, max_length=1024)
    labels_excluded: bool | None = Field(
        None,
        description="True: rounds and exports leave this user's labels out (nothing is deleted); false: back in.",
    )


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Text = Field("", max_length=128)


def user_to_dict(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role,
        "is_active": user.is_active,
        "is_ai": user.is_ai,
        "public_id": user.public_id,
        "labels_excluded": user.labels_excluded,
        "created_at": user.created_at.isoformat(),
    }


def token_to_dict(token: ApiToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "user_id": token.user_id,
        "name": token.name,
        "created_at": token.created_at.isoformat(),
        "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None,
    }


@router.get("/users", summary="List users")
def get_users(_admin: ApiAdmin, db: SessionDep) -> list[dict[str, Any]]:
    return [user_to_dict(u) for u in list_users(db)]


@router.post("/users", status_code=201, summary="Create a user (annotator by default)")
def post_user(body: UserCreate, _admin: ApiAdmin, db: SessionDep) -> dict[str, Any]:
    user = create_user(db, username=body.username, role=body.role, password=body.password)
    db.commit()
    return user_to_dict(user)


SIGNALS_EXAMPLE = {
    "7": {
        "labels": 120,
        "alpha": 0.04,
        "median_time_ms": 900.0,
        "time_ratio": 0.08,
        "position_bias": 0.97,
        "length_bias": 0.51,
        "straight_lining": 0.97,
        "straight_pattern": "first shown",
        "gold_accuracy": None,
        "flags": ["agreement with the rest α 0.04 < 0.20", "0.08x the median time per task"],
    }
}


@router.get(
    "/users/signals",
    summary="Careless-annotator signals and flags, by user id",
    responses={200: {"content": {"application/json": {"example": SIGNALS_EXAMPLE}}}},
)
def get_signals(_admin: ApiAdmin, db: SessionDep) -> dict[str, Any]:
    return {str(user_id): s.as_dict() for user_id, s in current_signals(db).items()}


@router.patch(
    "/users/{user_id}", summary="Deactivate/reactivate a user, reset the password, or exclude/include their labels"
)
def patch_user(user_id: DbId, body: UserUpdate, admin: ApiAdmin, db: SessionDep) -> dict[str, Any]:
    user = update_user(
        db,
        user_id=user_id,
        by=admin,
        is_active=body.is_active,
        password=body.password,
        labels_excluded=body.labels_excluded,
    )
    db.commit()
    return user_to_dict(user)


@router.get("/users/{user_id}/tokens", summary="A user's API tokens (never the secrets)")
def get_tokens(user_id: DbId, _admin: ApiAdmin, db: SessionDep) -> list[dict[str, Any]]:
    return [token_to_dict(t) for t in list_tokens(db, user_id=user_id)]


@router.post("/users/{user_id}/tokens", status_code=201, summary="Create an API token (shown once)")
def post_token(user_id: DbId, body: TokenCreate, _admin: ApiAdmin, db: SessionDep) -> dict[str, Any]:
    row, token = create_token(db, user=get_user(db, user_id=user_id), name=body.name)
    db.commit()
    return {**token_to_dict(row), "token": token}


@router.delete("/users/{user_id}/tokens/{token_id}", summary="Revoke an API token")
def delete_token(user_id: DbId, token_id: DbId, _admin: ApiAdmin, db: SessionDep) -> dict[str, Any]:
    row = revoke_token(db, token_id=token_id, user_id=user_id)
    db.commit()
    return token_to_dict(row)
