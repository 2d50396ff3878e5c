"""The rounds API: `POST /api/v1/rounds`, `GET /api/v1/rounds`, `GET|PUT /api/v1/rounds/schedule`, and
`POST /api/v1/label-ai`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException

from app.deps import ApiAdmin, SessionDep
from app.services.ai_feedback import LabelAIError, start_label_ai
from app.services.jobs import job_to_dict
from app.services.rounds import RoundError, list_rounds, round_to_dict, start_round
from app.services.schedule import ScheduleError, get_schedule, schedule_to_dict, update_schedule

router = APIRouter(prefix="/api/v1", tags=["rounds"])


@router.post("/rounds", status_code=201)
def api_start_round(
    admin: ApiAdmin,
    db: SessionDep,
    config: Annotated[dict[str, Any], Body(description="A round config; {} for the defaults.")],
) -> dict[str, Any]:
    """Start a round now: the `round` job (poll `GET /api/v1/jobs/{id}`). 409 when a round is already queued or
    running; 422 for a bad config, no current policy, or too little data (the message says which)."""
    try:
        job = start_round(db, config=config, created_by_id=admin.id)
        db.commit()
    except RoundError as exc:
        db.rollback()
        raise HTTPException(status_code=409 if "one round at a time" in str(exc) else 422, detail=str(exc)) from None
    return job_to_dict(job)


@router.post("/label-ai", status_code=201)
def api_label_ai(
    admin: ApiAdmin,
    db: SessionDep,
    config: Annotated[
        dict[str, Any],
        Body(description="judge (reward_model|lm), model_id, path, limit, annotator; {} = the current reward model"),
    ],
) -> dict[str, Any]:
    """Label pending tasks with an AI judge: the `label-ai` job (poll `GET /api/v1/jobs/{id}`)."""
    try:
        job = start_label_ai(db, config=config, created_by_id=admin.id)
        db.commit()
    except LabelAIError as exc:
        db.rollback()
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return job_to_dict(job)


@router.get("/rounds")
def api_list_rounds(admin: ApiAdmin, db: SessionDep) -> list[dict[str, Any]]:
    """Rounds, newest first, with their evaluation figures."""
    return [round_to_dict(j) for j in list_rounds(db)]


@router.get("/rounds/schedule")
def api_get_schedule(admin: ApiAdmin, db: SessionDep) -> dict[str, Any]:
    row = get_schedule(db)
    db.commit()
    return schedule_to_dict(row, db)


@router.put("/rounds/schedule")
def api_put_schedule(
    admin: ApiAdmin,
    db: SessionDep,
    body: Annotated[
        dict[str, Any], Body(description="enabled, min_new_annotations, every_minutes, config (a round config)")
    ],
) -> dict[str, Any]:
    """Change the schedule; fields left out keep their value; 0 switches a trigger off."""
    unknown = sorted(set(body) - {"enabled", "min_new_annotations", "every_minutes", "config"})
    if unknown:
        raise HTTPException(status_code=422, detail=f"unknown field(s): {', '.join(unknown)}")
    try:
        row = update_schedule(
            db,
            enabled=body.get("enabled"),
            min_new_annotations=body.get("min_new_annotations"),
            every_minutes=body.get("every_minutes"),
            config=body.get("config"),
        )
        db.commit()
    except (ScheduleError, TypeError) as exc:
        db.rollback()
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return schedule_to_dict(row, db)
