"""POST /api/v1/generate: K responses per prompt from a policy, made into tasks (a `generate` job). Admins only."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from app.deps import ApiAdmin, SessionDep
from app.inputs import DbId, Text
from app.services.generation import GenerationRequest, request_generation

router = APIRouter(prefix="/api/v1", tags=["generation"])
D = GenerationRequest()


class GenerateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_id: DbId | None = Field(None, description="policy model id; default the current policy")
    split: str = D.split
    tag: Text | None = None
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


@router.post("/generate", status_code=202, summary="Generate K responses per prompt and make tasks (a job)")
def post_generate(body: GenerateBody, admin: ApiAdmin, db: SessionDep) -> dict[str, Any]:
    job = request_generation(db, request=GenerationRequest(**body.model_dump()), created_by_id=admin.id)
    db.commit()
    return {"job_id": job.id, "status": job.status, "config": job.config, "url": f"/api/v1/jobs/{job.id}"}


@router.get("/generate/defaults", summary="The defaults of a generation request")
def get_defaults(_admin: ApiAdmin) -> dict[str, Any]:
    return asdict(D)
