"""POST /api/v1/generate: K responses per prompt from a policy, made into tasks (a `generate` job). Admins only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.deps import ApiAdmin, SessionDep
from app.services.generation import GenerationRequest, request_generation

router = APIRouter(prefix="/api/v1", tags=["generation"])


@router.post("/generate", status_code=202, summary="Generate K responses per prompt and make tasks (a job)")
def post_generate(body: GenerationRequest, admin: ApiAdmin, db: SessionDep) -> dict[str, Any]:
    job = request_generation(db, request=body, created_by_id=admin.id)
    db.commit()
    return {"job_id": job.id, "status": job.status, "config": job.config, "url": f"/api/v1/jobs/{job.id}"}


@router.get("/generate/defaults", summary="The defaults of a generation request")
def get_defaults(_admin: ApiAdmin) -> dict[str, Any]:
    return GenerationRequest().model_dump()
