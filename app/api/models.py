"""The model registry API: list, register a local Hugging Face directory, promote, roll back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from app.deps import ApiAdmin, SessionDep
from app.inputs import DbId, Text
from app.services.models_registry import list_models, model_to_dict, promote, register_model, rollback

router = APIRouter(prefix="/api/v1", tags=["models"])


class ModelRegister(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: Text
    name: Text = Field(max_length=128)
    kind: str
    stage: str = "pretrained"
    parent_id: DbId | None = None


@router.get("/models", summary="Registered models")
def get_models(_admin: ApiAdmin, db: SessionDep, kind: str | None = None) -> list[dict[str, Any]]:
    return [model_to_dict(m) for m in list_models(db, kind=kind)]


@router.post("/models", status_code=201, summary="Register a local Hugging Face model directory (checked to load)")
def post_model(body: ModelRegister, _admin: ApiAdmin, db: SessionDep) -> dict[str, Any]:
    # a sync endpoint: the load check's subprocess runs in the threadpool, off the event loop
    model = register_model(
        db, path=Path(body.path), name=body.name, kind=body.kind, stage=body.stage, parent_id=body.parent_id
    )
    db.commit()
    return model_to_dict(model)


@router.post("/models/{model_id}/promote", summary="Make a model the current one of its kind")
def post_promote(model_id: DbId, _admin: ApiAdmin, db: SessionDep) -> dict[str, Any]:
    model = promote(db, model_id=model_id)
    db.commit()
    return model_to_dict(model)


@router.post("/models/rollback", summary="Make the current model's parent (or previous) current again")
def post_rollback(_admin: ApiAdmin, db: SessionDep, kind: str = "policy") -> dict[str, Any]:
    model = rollback(db, kind=kind)
    db.commit()
    return model_to_dict(model)
