"""Rounds as rows: the list of rounds and the figures each one's report gives (Rounds page, API)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Job
from app.services.errors import NotFound
from app.services.rounds.config import ROUND_KIND


def get_round(session: Session, round_id: int) -> Job:
    job = session.get(Job, round_id)
    if job is None or job.kind != ROUND_KIND:
        raise NotFound(f"no round {round_id}")
    return job


def round_summary(job: Job) -> dict[str, Any]:
    """One row of the rounds list / API: the job plus the figures of its report."""
    config = job.config or {}
    result = job.result or {}
    return {
        "id": job.id,
        "number": job.round_number,
        "status": job.status,
        "algo": config.get("algo", "ppo"),
        "note": config.get("note", ""),
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "policy_id": result.get("policy_id"),
        "reward_model_id": result.get("reward_model_id"),
        "tasks": result.get("tasks"),
        "evaluation": result.get("evaluation", {}),
        "warnings": result.get("warnings", []),
        "promotion": result.get("promotion"),
        "rm_accuracy": (result.get("reward") or {}).get("eval_accuracy"),
        "progress_message": job.progress_message,
    }


def round_to_dict(job: Job) -> dict[str, Any]:
    row = round_summary(job)
    for key in ("created_at", "finished_at"):
        row[key] = row[key].isoformat() if row[key] else None
    return row


def list_rounds(db: Session, limit: int = 100) -> list[Job]:
    return list(db.scalars(select(Job).where(Job.kind == ROUND_KIND).order_by(Job.id.desc()).limit(limit)))
