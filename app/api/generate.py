"""POST /api/v1/generate (a `generate` job) and the model registry API (/api/v1/models). Admins only."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from app.deps import ApiAdmin, SessionDep
from app.services.generation import GenerationError, GenerationRequest, request_generation
from app.services.models_registry import ModelError, list_models, model_to_dict, promote, register_model, rollback

router = APIRouter(prefix="/api/v1", tags=["generation"])
D = GenerationRequest()


class GenerateBody(BaseModel):
    model_id: int | None = Field(None, description="policy model id; default the current policy")
    split: str = D.split
    tag: str | None = None
    count: int = D.count
    num_samples: int = Field(D.num_samples, description="K responses per prompt, 2..8")
    temperature: float = D.temperature
    top_k: int = D.top_k
    top_p: float = D.top_p
    max_new_tokens: int = D.max_new_tokens
    seed: int = D.seed
    task_kind: str = D.task_kind
    overlap: int = D.overlap
    priority: int = D.priority


class ModelRegister(BaseModel):
    path: str
    name: str = Field(max_length=128)
    kind: str
    stage: str = "pretrained"
    parent_id: int | None = None


@router.post("/generate", status_code=202, summary="Generate K responses per prompt and make tasks (a job)")
def post_generate(body: GenerateBody, admin: ApiAdmin, db: SessionDep) -> dict[str, Any]:
    try:
        job = request_generation(db, request=GenerationRequest(**body.model_dump()), created_by_id=admin.id)
    except GenerationError as exc:
        db.rollback()
        raise HTTPException(status_code=422, detail=str(exc)) from None
    db.commit()
    return {"job_id": job.id, "status": job.status, "config": job.config, "url": f"/api/v1/jobs/{job.id}"}


@router.get("/generate/defaults", summary="The defaults of a generation request")
def get_defaults(_admin: ApiAdmin) -> dict[str, Any]:
    return asdict(D)


@router.get("/models", summary="Registered models")
def get_models(_admin: ApiAdmin, db: SessionDep, kind: str | None = None) -> list[dict[str, Any]]:
    return [model_to_dict(m) for m in list_models(db, kind=kind)]


@router.post("/models", status_code=201, summary="Register a local Hugging Face model directory (checked to load)")
def post_model(body: ModelRegister, _admin: ApiAdmin, db: SessionDep) -> dict[str, Any]:
    if body.stage not in ("pretrained", "sft", "rlhf"):
        raise HTTPException(status_code=422, detail="stage must be pretrained, sft or rlhf")
    try:  # the load check runs in a subprocess; a sync endpoint keeps it off the event loop
        model = register_model(
            db, path=Path(body.path), name=body.name, kind=body.kind, stage=body.stage, parent_id=body.parent_id
        )
    except ModelError as exc:
        db.rollback()
        raise HTTPException(status_code=422, detail=str(exc)) from None
    db.commit()
    return model_to_dict(model)


@router.post("/models/{model_id}/promote", summary="Make a model the current one of its kind")
def post_promote(model_id: int, _admin: ApiAdmin, db: SessionDep) -> dict[str, Any]:
    try:
        model = promote(db, model_id=model_id)
    except ModelError as exc:
        db.rollback()
        raise HTTPException(status_code=404 if "no model" in str(exc) else 422, detail=str(exc)) from None
    db.commit()
    return model_to_dict(model)


@router.post("/models/rollback", summary="Make the current model's parent (or previous) current again")
def post_rollback(_admin: ApiAdmin, db: SessionDep, kind: str = "policy") -> dict[str, Any]:
    try:
        model = rollback(db, kind=kind)
    except ModelError as exc:
        db.rollback()
        raise HTTPException(status_code=422, detail=str(exc)) from None
    db.commit()
    return model_to_dict(model)
