"""JSON API for gold tasks and qualification: mark a task gold with its answer, list gold tasks, see and reset or
allow annotators' qualification (admins); an annotator's own qualification result. Gold tasks are also created
by `POST /api/v1/tasks` with a `gold` field."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from app.api.tasks import AUTH_RESPONSES
from app.deps import ApiAdmin, ApiUser, SessionDep, SettingsDep
from app.inputs import DbId, Offset, Text
from app.services.gold import (
    MAX_EXPLANATION_CHARS,
    allow_annotator,
    list_gold,
    mark_gold,
    qualification_overview,
    qualification_report,
    reset_qualification,
    unmark_gold,
)

router = APIRouter(prefix="/api/v1", tags=["gold"])


class GoldIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"answer": {"choice": "chosen", "chosen_id": 31}, "explanation": "B invents a unit."},
                {"answer": {"ranking": [44, 42, 43]}, "qualification": True},
                {"answer": {"ratings": {"50": "good", "51": "bad"}}},
            ]
        },
    )

    answer: dict[str, Any] = Field(
        description='In response (generation) ids: pairwise {"choice": "chosen"|"tie"|"both_bad", "chosen_id"}, '
        'ranking {"ranking": [every id, best first]}, rating {"ratings": {"<id>": "good"|"bad"} for every id}'
    )
    explanation: Text | None = Field(
        None, max_length=MAX_EXPLANATION_CHARS, description="Shown to annotators after the qualification set"
    )
    qualification: bool = Field(False, description="In the qualification set (else mixed into queues as gold)")


class GoldOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "task_id": 12,
                    "kind": "pairwise",
                    "prompt": "Explain what a KL penalty does in RLHF.",
                    "answer": {"choice": "chosen", "chosen_id": 31},
                    "explanation": "B invents a unit.",
                    "qualification": False,
                    "annotations": 4,
                    "correct": 3,
                    "retired": False,
                }
            ]
        }
    )

    task_id: int
    kind: str
    prompt: str
    answer: dict[str, Any]
    explanation: str | None
    qualification: bool
    annotations: int = Field(description="Live human annotations of the task")
    correct: int = Field(description="Of those, how many match the answer")
    retired: bool


class QualificationRow(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": 3,
                    "username": "ann",
                    "status": "failed",
                    "correct": 2,
                    "total": 5,
                    "decided_at": "2026-01-01T12:00:00+00:00",
                }
            ]
        }
    )

    user_id: int
    username: str
    status: str | None = Field(description="passed, failed, allowed, or null: not graded yet")
    correct: int
    total: int
    decided_at: str | None


class QualificationItemOut(BaseModel):
    task_id: int
    kind: str
    prompt: str
    responses: list[list[str]] = Field(description="[label, text] in the order you were shown them")
    yours: str
    gold: str = Field(description="The right answer, in the labels you saw")
    right: bool
    explanation: str | None


class QualificationOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "in_progress",
                    "correct": 0,
                    "total": 5,
                    "threshold": 0.8,
                    "remaining": 3,
                    "items": [],
                }
            ]
        }
    )

    status: str = Field(description="not_required, in_progress, passed, failed or allowed")
    correct: int
    total: int
    threshold: float | None
    remaining: int
    items: list[QualificationItemOut] = Field(description="Once graded: each task, your answer, the right one, why")


@router.get("/gold", response_model=list[GoldOut], summary="Gold tasks with their answers (admins)")
def get_gold(
    _admin: ApiAdmin, db: SessionDep, limit: int = Query(200, ge=1, le=1000), offset: Offset = 0
) -> list[dict[str, Any]]:
    return [asdict(row) for row in list_gold(db, limit=limit, offset=offset)]


@router.put(
    "/gold/{task_id}",
    response_model=GoldOut,
    summary="Make a task gold with its known answer, or replace the answer (admins)",
    description="The task leaves the regular queue; its annotations (earlier ones included) leave exports, "
    "round snapshots and agreement, and grade annotators instead.",
    responses={404: {"description": "No such task"}, 422: {"description": "The answer does not fit the task"}},
)
def put_gold(task_id: DbId, body: GoldIn, _admin: ApiAdmin, db: SessionDep) -> dict[str, Any]:
    row = mark_gold(
        db, task_id=task_id, answer=body.answer, explanation=body.explanation, qualification=body.qualification
    )
    db.commit()
    return asdict(row)


@router.delete(
    "/gold/{task_id}",
    status_code=204,
    summary="Make a gold task a regular task again (admins)",
    responses={404: {"description": "Not a gold task"}},
)
def delete_gold(task_id: DbId, _admin: ApiAdmin, db: SessionDep) -> None:
    unmark_gold(db, task_id=task_id)
    db.commit()


@router.get("/gold/qualification", response_model=list[QualificationRow], summary="Annotators' qualification (admins)")
def get_qualifications(_admin: ApiAdmin, db: SessionDep) -> list[dict[str, Any]]:
    return [
        {**asdict(row), "decided_at": row.decided_at.isoformat() if row.decided_at else None}
        for row in qualification_overview(db)
    ]


@router.post(
    "/gold/qualification/{user_id}/reset",
    status_code=204,
    summary="Let an annotator take the qualification set again (admins)",
    description="Their result goes; their qualification answers are undone (kept) and the set is offered anew.",
    responses={404: {"description": "No such user"}},
)
def post_reset(user_id: DbId, _admin: ApiAdmin, db: SessionDep) -> None:
    reset_qualification(db, user_id=user_id)
    db.commit()


@router.post(
    "/gold/qualification/{user_id}/allow",
    status_code=204,
    summary="Let an annotator work real tasks without passing the qualification set (admins)",
    responses={404: {"description": "No such user"}},
)
def post_allow(user_id: DbId, admin: ApiAdmin, db: SessionDep, settings: SettingsDep) -> None:
    allow_annotator(db, user_id=user_id, admin_id=admin.id, threshold=settings.qualification_threshold)
    db.commit()


@router.get(
    "/qualification",
    response_model=QualificationOut,
    summary="Your qualification: progress, then your result with the right answers and their explanations",
    responses=AUTH_RESPONSES,
)
def get_my_qualification(user: ApiUser, db: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    return asdict(qualification_report(db, user_id=user.id, threshold=settings.qualification_bar))
