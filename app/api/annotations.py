"""JSON API for annotations: submit (idempotent), list mine, undo."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from app.annotate.transaction import as_api_user
from app.annotate.work import (
    IDEMPOTENCY_KEY_MAX,
    IDEMPOTENCY_KEY_MIN,
    AnnotationIn,
    list_work,
    submit_work,
    undo_work,
)
from app.api.tasks import AUTH_RESPONSES
from app.inputs import DbId, Offset

router = APIRouter(prefix="/api/v1", tags=["annotations"])


class AnnotationCreated(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"annotation_id": 77}]})

    annotation_id: int


@router.post(
    "/annotations",
    status_code=201,
    response_model=AnnotationCreated,
    summary="Submit an annotation",
    description="Idempotent by the `Idempotency-Key` header (unique per annotator): a replay with the same body "
    "returns the first result with 200 and stores nothing; the same key with a different body is 409. "
    "The task must be assigned to you (`GET /api/v1/tasks/next`). A submit after your lease expired is still "
    "stored when the task still needs a label; 409 with a message when others filled it meanwhile or it was "
    "retired (keep your text: nothing was stored). Records the guideline version you were shown "
    "(`guideline_version_id`), else the one in force.",
    responses={
        200: {
            "description": "Replay: the annotation stored under this key",
            "content": {"application/json": {"example": {"annotation_id": 77}}},
        },
        409: {"description": "Key reused with another body, task not yours, filled up by others or retired"},
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
        "guideline_version_id": 3,
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
    offset: Offset = 0,
) -> Response:
    if not mine:
        raise HTTPException(
            400, "only your own annotations are listed here (mine=1); admins export everything from the exports page"
        )
    return await as_api_user(request, list_work(limit=limit, offset=offset))


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
async def undo_annotation_api(request: Request, annotation_id: DbId) -> Response:
    return await as_api_user(request, undo_work(annotation_id))
