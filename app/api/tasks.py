"""JSON API for tasks: import (admins), the annotator's next task, skip."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from app.annotate.transaction import as_api_user
from app.annotate.work import next_work, renew_work, skip_work
from app.deps import ApiAdmin, SessionDep, SettingsDep
from app.inputs import DbId, Text
from app.services.retirement import MAX_IDS, retire_tasks
from app.services.tasks import TaskImportError, import_task_specs, parse_task_items

AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {401: {"description": "Missing, unknown or revoked bearer token"}}
router = APIRouter(prefix="/api/v1", tags=["tasks"])

TASK_EXAMPLE = [
    {
        "prompt": "Explain what a KL penalty does in RLHF.",
        "responses": ["It keeps the policy close...", "It makes training faster."],
        "kind": "pairwise",
        "overlap": 2,
        "priority": 0,
        "meta": {"batch": "demo"},
    },
    {
        "messages": [{"role": "user", "content": "Write a haiku about gradients."}],
        "responses": ["Slopes guide the descent...", "Numbers fall like rain...", "Loss, loss, always loss..."],
        "kind": "ranking",
        "overlap": 1,
    },
    {
        "prompt": "What is 7 * 8?",
        "responses": ["56", "54"],
        "kind": "pairwise",
        "gold": {
            "answer": {"choice": "chosen", "chosen": 0},
            "explanation": "7 * 8 is 56.",
            "qualification": False,
        },
    },
]


class ResponseOut(BaseModel):
    id: int = Field(description="The response's generation id: answer in terms of it.")
    text: str


class NextTaskOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "task_id": 12,
                    "kind": "pairwise",
                    "prompt": "Explain what a KL penalty does in RLHF.",
                    "responses": [
                        {"id": 31, "text": "It keeps the policy close..."},
                        {"id": 30, "text": "It makes training faster."},
                    ],
                    "lease_expires_at": "2026-01-01T12:10:00+00:00",
                    "guideline_version_id": 3,
                }
            ]
        }
    )

    task_id: int
    kind: str = Field(description="pairwise, ranking or rating")
    prompt: str | list[dict[str, str]] = Field(description="A string, or chat messages [{role, content}]")
    responses: list[ResponseOut] = Field(description="In this annotator's (shuffled, recorded) order")
    lease_expires_at: str = Field(description="Renew it while you work: `POST /api/v1/tasks/{task_id}/renew`")
    guideline_version_id: int | None = Field(
        description="The guidelines in force for this task (`GET /api/v1/guidelines/versions/{id}`); null: none. "
        "Send it back with the annotation."
    )


class SkipIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "I can't judge code in this language"}]}
    )

    reason: Text = Field(min_length=1, max_length=1000)


class SkipOut(BaseModel):
    task_id: int
    status: str = "skipped"


class ImportOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"created": 2, "task_ids": [41, 42]}]})

    created: int
    task_ids: list[int]
    warnings: list[str] = Field(
        default_factory=list, description="Tasks longer than the current policy's context: training skips them."
    )


@router.post(
    "/tasks",
    status_code=201,
    response_model=ImportOut,
    summary="Import tasks (admins)",
    description="The same objects as the JSONL lines of `rlhf tasks import`, as one JSON list. All or nothing: "
    "any bad item -> 422 listing item numbers (1-based, as `line`) and reasons; nothing stored. An item with "
    "`gold` is a gold task with its known answer, in response indices (0-based, the order of `responses`): "
    '`{"answer": {"choice": "chosen", "chosen": 0}}` (or `"tie"`, `"both_bad"`), `{"answer": {"ranking": [2, 0, '
    '1]}}`, `{"answer": {"ratings": ["good", "bad"]}}`, with an optional `explanation` and `qualification: true` '
    "for the qualification set.",
    responses={
        422: {
            "description": "Bad items; nothing stored",
            "content": {
                "application/json": {
                    "example": {
                        "detail": "1 bad line(s), nothing imported: line 2: a pairwise task needs exactly 2 "
                        "responses, got 3",
                        "errors": [{"line": 2, "reason": "a pairwise task needs exactly 2 responses, got 3"}],
                    }
                }
            },
        },
        413: {"description": "The body is over the upload limit"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "array", "items": {"type": "object"}}, "example": TASK_EXAMPLE}
            },
        }
    },
)
async def import_tasks_api(request: Request, _admin: ApiAdmin, db: SessionDep, settings: SettingsDep) -> JSONResponse:
    body = await request.body()  # a body far over the limit was refused before it was read (app.body_limit)
    if len(body) > settings.max_upload_bytes:
        raise HTTPException(413, f"the body is over the {settings.max_upload_bytes} byte upload limit")
    try:
        items = json.loads(body)
    except ValueError as exc:  # not JSON, not UTF-8, or an integer too long to convert (over 4300 digits)
        raise HTTPException(422, f"the body is not JSON: {exc}") from None
    return await run_in_threadpool(_import_items, db, items, settings.max_text_bytes)


def _import_items(db, items: Any, max_text_bytes: int) -> JSONResponse:
    try:
        result = import_task_specs(db, specs=parse_task_items(items, max_text_bytes=max_text_bytes))
    except TaskImportError as exc:
        db.rollback()
        return JSONResponse(
            {"detail": str(exc), "errors": [{"line": n, "reason": r} for n, r in exc.errors]}, status_code=422
        )
    db.commit()
    return JSONResponse(
        {"created": len(result.task_ids), "task_ids": result.task_ids, "warnings": result.warnings}, status_code=201
    )


@router.get(
    "/tasks/next",
    response_model=NextTaskOut,
    summary="The next task for this annotator",
    description="Returns the task you already hold a lease on, otherwise leases the next one (highest priority, "
    "then oldest) for the lease time. 204 when nothing is left for you. Where qualification is required, your "
    "first tasks are the qualification set; 403 once you failed it (`GET /api/v1/qualification` shows why).",
    responses={
        204: {"description": "Nothing left for this annotator"},
        403: {
            "description": "You failed the qualification set: no tasks until an admin resets or allows you",
            "content": {
                "application/json": {
                    "example": {
                        "detail": "You did not pass the qualification set: 2 of 5 right (40%), 80% needed. You get "
                        "no tasks until an admin resets your qualification (to try again) or allows you."
                    }
                }
            },
        },
        **AUTH_RESPONSES,
    },
)
async def next_task_api(request: Request) -> Response:
    return await as_api_user(request, next_work, core=True)


@router.post(
    "/tasks/{task_id}/skip",
    response_model=SkipOut,
    summary="Skip a task (with a reason)",
    description="Frees your slot; the task is never offered to you again.",
    responses={
        404: {"description": "Not assigned to you"},
        409: {"description": "Already annotated"},
        **AUTH_RESPONSES,
    },
)
async def skip_task_api(request: Request, task_id: DbId, body: SkipIn) -> Response:
    return await as_api_user(request, skip_work(task_id, body.reason))


class RenewOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"task_id": 12, "lease_expires_at": "2026-01-01T12:20:00+00:00"}]}
    )

    task_id: int
    lease_expires_at: str


@router.post(
    "/tasks/{task_id}/renew",
    response_model=RenewOut,
    summary="Renew your lease on a task (while you work on it)",
    description="The lease runs for the lease time from now. A lease that already expired is taken again when the "
    "task still has a free slot. A submit after the lease expired is still stored when the task still needs a "
    "label; renewing keeps the slot yours meanwhile.",
    responses={
        404: {"description": "Not assigned to you"},
        409: {"description": "Already annotated or skipped, retired, or its slots were taken by others"},
        **AUTH_RESPONSES,
    },
)
async def renew_task_api(request: Request, task_id: DbId) -> Response:
    return await as_api_user(request, renew_work(task_id))


class RetireIn(BaseModel):
    ids: list[DbId] = Field(min_length=1, max_length=MAX_IDS, description="Task ids to retire (all must exist).")


class RetireOut(BaseModel):
    retired: int = Field(description="Newly retired.")
    already: int = Field(description="Were retired before.")


@router.post(
    "/tasks/retire",
    response_model=RetireOut,
    summary="Retire tasks (kept, never offered, trained on or exported again)",
    responses={404: {"description": "An id does not exist; nothing was retired"}, **AUTH_RESPONSES},
)
def post_retire_tasks(body: RetireIn, _admin: ApiAdmin, db: SessionDep) -> dict[str, int]:
    result = retire_tasks(db, ids=sorted(set(body.ids)))
    db.commit()
    return {"retired": result.retired, "already": result.already}
