"""JSON API for annotations: submit (idempotent), list mine, undo."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from app.api.tasks import AUTH_RESPONSES, TokenUser, Work, as_api_user
from app.services.annotations import (
    AnnotationConflict,
    AnnotationInvalid,
    annotation_json,
    list_my_annotations,
    submit_annotation,
    undo_annotation,
)
from app.services.assignment import aware
from app.settings import Settings

router = APIRouter(prefix="/api/v1", tags=["annotations"])

IDEMPOTENCY_KEY_MIN, IDEMPOTENCY_KEY_MAX = 1, 128
FEEDBACK_FIELDS = ("choice", "chosen_id", "strength", "ranking", "ratings", "critiques", "critique", "rewrite", "flags")


class AnnotationIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "task_id": 12,
                    "choice": "chosen",
                    "chosen_id": 31,
                    "strength": 2,
                    "critique": "B is vague.",
                    "time_spent_ms": 5400,
                },
                {"task_id": 13, "ranking": [44, 42, 43], "rewrite": "The ideal answer...", "time_spent_ms": 12000},
                {"task_id": 14, "ratings": {"50": "good", "51": "bad"}, "critiques": {"51": "Wrong unit."}},
                {"task_id": 15, "choice": "both_bad", "flags": ["unsafe"]},
            ]
        },
    )

    task_id: int
    choice: Literal["chosen", "tie", "both_bad"] | None = Field(None, description="pairwise only")
    chosen_id: int | None = Field(None, description="pairwise, with choice=chosen: a response id")
    strength: int | None = Field(None, description="pairwise, with choice=chosen: 1 slightly, 2 clearly, 3 much better")
    ranking: list[int] | None = Field(None, description="ranking: every response id, best first")
    ratings: dict[str, Literal["good", "bad"]] | None = Field(
        None, description='{"<response id>": "good"|"bad"}: every response for rating tasks, optional otherwise'
    )
    critiques: dict[str, str] | None = Field(None, description='{"<response id>": text}, optional')
    critique: str | None = Field(None, description="overall critique, optional")
    rewrite: str | None = Field(None, description="the ideal response (an SFT demonstration), optional")
    flags: list[Literal["unsafe", "broken"]] | None = None
    time_spent_ms: int | None = Field(None, ge=0)


class AnnotationCreated(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"annotation_id": 77}]})

    annotation_id: int


def _error(exc: AnnotationConflict | AnnotationInvalid) -> HTTPException:
    return HTTPException(422 if isinstance(exc, AnnotationInvalid) else exc.status, str(exc))


@router.post(
    "/annotations",
    status_code=201,
    response_model=AnnotationCreated,
    summary="Submit an annotation",
    description="Idempotent by the `Idempotency-Key` header (unique per annotator): a replay with the same body "
    "returns the first result with 200 and stores nothing; the same key with a different body is 409. "
    "The task must be assigned to you (`GET /api/v1/tasks/next`). 409 also when your lease expired and the task "
    "was completed by others meanwhile.",
    responses={
        200: {
            "description": "Replay: the annotation stored under this key",
            "content": {"application/json": {"example": {"annotation_id": 77}}},
        },
        409: {"description": "Key reused with another body, task not yours, or filled up"},
        422: {"description": "The feedback does not fit the task; nothing stored"},
        **AUTH_RESPONSES,
    },
)
async def submit_annotation_api(
    request: Request,
    body: AnnotationIn,
    idempotency_key: Annotated[
        str, Header(alias="Idempotency-Key", min_length=IDEMPOTENCY_KEY_MIN, max_length=IDEMPOTENCY_KEY_MAX)
    ],
) -> Response:
    return await as_api_user(request, submit_work(body, idempotency_key), core=True)


def submit_work(body: AnnotationIn, idempotency_key: str) -> Work:
    """The submit transaction, for this route and for app.annotate_fast_path."""

    def work(db: Connection, user: TokenUser, settings: Settings) -> Response:
        feedback = {k: getattr(body, k) for k in FEEDBACK_FIELDS}
        try:
            result = submit_annotation(
                db,
                user=user,
                task_id=body.task_id,
                feedback=feedback,
                idempotency_key=idempotency_key,
                time_spent_ms=body.time_spent_ms,
                max_text_bytes=settings.max_text_bytes,
            )
        except (AnnotationConflict, AnnotationInvalid) as exc:
            db.rollback()
            raise _error(exc) from None
        db.commit()
        return JSONResponse({"annotation_id": result.annotation_id}, status_code=200 if result.replayed else 201)

    return work


LIST_EXAMPLE = [
    {
        "annotation_id": 77,
        "task_id": 12,
        "kind": "pairwise",
        "choice": "chosen",
        "chosen_id": 31,
        "strength": 2,
        "ranking": None,
        "ratings": None,
        "critiques": None,
        "critique": "B is vague.",
        "rewrite": None,
        "flags": None,
        "positions": [31, 30],
        "time_spent_ms": 5400,
        "created_at": "2026-01-01T12:00:00+00:00",
        "deleted_at": None,
    }
]


@router.get(
    "/annotations",
    summary="Your annotations, newest first",
    responses={
        200: {"description": "Newest first", "content": {"application/json": {"example": LIST_EXAMPLE}}},
        **AUTH_RESPONSES,
    },
    description="`mine=1` (the default): your own annotations, undone ones with `deleted_at`. "
    "Annotators never see other annotators' labels.",
)
async def list_annotations_api(
    request: Request,
    mine: bool = True,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    if not mine:
        raise HTTPException(
            400, "only your own annotations are listed here (mine=1); admins export everything from the exports page"
        )

    def work(db: Session, user: TokenUser, _settings: Settings) -> Response:
        rows = [annotation_json(a) for a in list_my_annotations(db, user_id=user.id, limit=limit, offset=offset)]
        db.rollback()
        return JSONResponse(rows)

    return await as_api_user(request, work)


@router.delete(
    "/annotations/{annotation_id}",
    summary="Undo one of your annotations",
    description="Within the undo window (default 5 minutes): kept with a deletion time (excluded from "
    "exports and counts) and the task is leased to you again.",
    responses={
        404: {"description": "Not one of yours"},
        409: {"description": "Too old or already undone"},
        **AUTH_RESPONSES,
    },
)
async def undo_annotation_api(request: Request, annotation_id: int) -> Response:
    def work(db: Session, user: TokenUser, settings: Settings) -> Response:
        try:
            annotation = undo_annotation(
                db,
                user=user,
                annotation_id=annotation_id,
                undo_minutes=settings.undo_minutes,
                lease_minutes=settings.lease_minutes,
            )
        except AnnotationConflict as exc:
            db.rollback()
            raise _error(exc) from None
        out = {
            "annotation_id": annotation.id,
            "task_id": annotation.task_id,
            "deleted_at": aware(annotation.deleted_at).isoformat(),
        }
        db.commit()
        return JSONResponse(out)

    return await as_api_user(request, work)
