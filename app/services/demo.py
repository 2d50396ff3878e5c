"""What `rlhf demo` puts in the database: the embedded world's models, prompts and first generation request.

Idempotent: a second start finds everything in place and changes nothing.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Job, ModelVersion, Task
from app.services.generation import GenerationRequest, request_generation
from app.services.models_registry import promote, register_model
from app.services.prompt_import import import_prompts

# The first tasks: how many train prompts get responses, per world size.
FIRST_TASK_PROMPTS = {"tiny": 40, "small": 200}


def _registered(session: Session, path: Path) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.path == str(path.resolve())))


def register_world_models(session: Session, *, pretrained: Path, sft: Path, size: str) -> list[str]:
    """Both models, the SFT one current (unless a later policy, e.g. from a round, is current already)."""
    lines = []
    pre = _registered(session, pretrained)
    if pre is None:
        pre = register_model(
            session, path=pretrained, name=f"world-{size}-pretrained", kind="policy", stage="pretrained"
        )
        lines.append(f"registered model {pre.id} {pre.name} (pretrained)")
    sft_model = _registered(session, sft)
    if sft_model is None:
        sft_model = register_model(
            session, path=sft, name=f"world-{size}-sft", kind="policy", stage="sft", parent_id=pre.id
        )
        promote(session, model_id=sft_model.id)
        lines.append(f"registered model {sft_model.id} {sft_model.name} (sft, current policy)")
    return lines


def prepare_database(session: Session, *, files, models, size: str, seed: int) -> list[str]:
    """Register the world's models, import its prompts and queue the first generation; returns what it did."""
    lines = register_world_models(session, pretrained=models.pretrained, sft=models.sft, size=size)
    result = import_prompts(
        session, data=Path(files.prompts).read_bytes(), name=Path(files.prompts).name, source=f"world-{size}"
    )
    if result.created:
        lines.append(f"imported {result.created} prompts (train and eval splits; {result.duplicates} already there)")
    has_tasks = session.scalar(select(func.count()).select_from(Task)) > 0
    has_generation = session.scalar(select(func.count()).select_from(Job).where(Job.kind == "generate")) > 0
    if not has_tasks and not has_generation:
        from trainer.world.build import SIZES

        request = GenerationRequest(
            count=FIRST_TASK_PROMPTS[size],
            num_samples=2,
            temperature=0.9,
            top_k=0,
            top_p=1.0,
            max_new_tokens=SIZES[size].max_new_tokens,
            seed=seed,
            task_kind="pairwise",
            overlap=1,
        )
        job = request_generation(session, request=request)
        lines.append(
            f"queued generation job {job.id}: {request.count} train prompts x {request.num_samples} "
            f"responses, temperature {request.temperature}, top-k {request.top_k} (off), top-p "
            f"{request.top_p} (off), max new tokens {request.max_new_tokens}, seed {request.seed}"
        )
    if not lines:
        lines.append("models, prompts and first tasks already in place")
    return lines
