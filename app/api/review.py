"""JSON API for review (reviewers and admins): the disagreement queue, a task's annotations with their annotators
and its final labels, and recording a task's final label with a note (app.services.review)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from app.api.tasks import AUTH_RESPONSES, ResponseOut
from app.deps import ApiReviewer, SessionDep
from app.inputs import DbId, Text
from app.services.review import MAX_NOTE_CHARS, adjudicate, adjudication_view, review_queue, review_task

router = APIRouter(prefix="/api/v1", tags=["review"])
RESPONSES: dict[int | str, dict[str, Any]] = {**AUTH_RESPONSES, 403: {"description": "Reviewers and admins only"}}


class QueueItemOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "task_id": 12,
                    "kind": "pairwise",
                    "agreement": 0.0,
                    "annotations": 3,
                    "adjudicated": False,
                    "reviewer": None,
                    "adjudicated_at": None,
                }
            ]
        }
    )

    task_id: int
    kind: str
    agreement: float = Field(description="Share of annotation pairs that agree (below 1: they disagree)")
    annotations: int = Field(description="Live human annotations of the task")
    adjudicated: bool
    reviewer: str | None = Field(description="Who recorded the current final label")
    adjudicated_at: datetime | None


class AdjudicationIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"choice": "chosen", "chosen_id": 31, "strength": 2, "note": "B invents a unit; A is right."},
                {"ranking": [44, 42, 43], "note": "42 and 43 both miss the question; 43 is shorter."},
                {"ratings": {"50": "good", "51": "bad"}, "rewrite": "Paris.", "note": "51 is off topic."},
            ]
        },
    )

    choice: Literal["chosen", "tie", "both_bad"] | None = Field(None, description="pairwise tasks")
    chosen_id: DbId | None = Field(None, description="pairwise, with choice=chosen: the better response's id")
    strength: Literal[1, 2, 3] | None = Field(None, description="pairwise, with choice=chosen: 1 slightly .. 3 much")
    ranking: list[DbId] | None = Field(None, description="ranking tasks: every response id, best first")
    ratings: dict[str, Literal["good", "bad"]] | None = Field(
        None, description='rating tasks: {"<response id>": "good"|"bad"} for every response'
    )
    rewrite: Text | None = Field(None, description="optional: the ideal response")
    note: Text = Field(min_length=1, max_length=MAX_NOTE_CHARS, description="why this is the final label")


class AdjudicationOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 5,
                    "task_id": 12,
                    "reviewer": "rev",
                    "kind": "pairwise",
                    "label": {"choice": "chosen", "chosen_id": 31, "strength": 2},
                    "note": "B invents a unit; A is right.",
                    "created_at": "2026-01-01T12:00:00Z",
                }
            ]
        }
    )

    id: int
    task_id: int
    reviewer: str
    kind: str
    label: dict[str, Any] = Field(description="The final label, in the task kind's shape (response ids)")
    note: str
    created_at: datetime


class AnnotationOut(BaseModel):
    id: int
    annotator: str
    source: str
    answer: str = Field(description="The annotation's answer in words")
    critique: str | None
    critiques: dict[str, Any]
    rewrite: str | None
    flags: list[Any]
    shown: list[int] = Field(description="Response ids in the order this annotator saw them")
    created_at: datetime
    deleted_at: datetime | None


class ReviewTaskOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "task_id": 12,
                    "kind": "pairwise",
                    "prompt": "Explain what a KL penalty does in RLHF.",
                    "agreement": 0.0,
                    "responses": [{"id": 31, "text": "It keeps the policy close..."}, {"id": 32, "text": "Faster."}],
                    "annotations": [
                        {
                            "id": 90,
                            "annotator": "ann1",
                            "source": "human",
                            "answer": "chose #31 (strength 2)",
                            "critique": None,
                            "critiques": {},
                            "rewrite": None,
                            "flags": [],
                            "shown": [32, 31],
                            "created_at": "2026-01-01T11:00:00Z",
                            "deleted_at": None,
                        }
                    ],
                    "current": None,
                    "history": [],
                }
            ]
        }
    )

    task_id: int
    kind: str
    prompt: str
    agreement: float | None
    responses: list[ResponseOut]
    annotations: list[AnnotationOut] = Field(description="Every annotation of the task, with its annotator")
    current: AdjudicationOut | None = Field(description="The current final label (the newest)")
    history: list[AdjudicationOut] = Field(description="Every final label recorded, newest first")


@router.get("/review/queue", summary="Tasks whose human annotations disagree", responses=RESPONSES)
def get_queue(
    _reviewer: ApiReviewer,
    db: SessionDep,
    state: str = Query("pending", description="pending (no final label yet), adjudicated or all"),
    limit: int = Query(100, ge=1, le=1000),
) -> list[QueueItemOut]:
    return [QueueItemOut(**asdict(i)) for i in review_queue(db, state=state, limit=limit)]


@router.get("/review/{task_id}", summary="A task's annotations and final labels", responses=RESPONSES)
def get_review_task(task_id: DbId, _reviewer: ApiReviewer, db: SessionDep) -> ReviewTaskOut:
    r = review_task(db, task_id)
    d = r.detail
    return ReviewTaskOut(
        task_id=d.task.id,
        kind=d.task.kind,
        prompt=d.prompt_text,
        agreement=r.agreement,
        responses=[ResponseOut(id=g["id"], text=g["text"]) for g in d.responses],
        annotations=[AnnotationOut(**a) for a in d.annotations],
        current=AdjudicationOut(**asdict(r.current)) if r.current else None,
        history=[AdjudicationOut(**asdict(h)) for h in r.history],
    )


@router.post(
    "/review/{task_id}",
    summary="Record a task's final label with a note",
    status_code=201,
    responses={
        **RESPONSES,
        404: {"description": "No such task"},
        409: {"description": "A gold or retired task, or one without a human annotation"},
        422: {"description": "A label that does not fit the task's kind and responses, or no note"},
    },
)
def post_adjudication(task_id: DbId, body: AdjudicationIn, reviewer: ApiReviewer, db: SessionDep) -> AdjudicationOut:
    label = body.model_dump(exclude={"note"}, exclude_none=True)
    row = adjudicate(db, task_id=task_id, reviewer=reviewer, label=label, note=body.note)
    db.commit()
    return AdjudicationOut(**asdict(adjudication_view(db, row)))
