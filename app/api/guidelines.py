"""JSON API for the annotation guidelines: read those in force (everyone), write a new version (admins), list and
read old versions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from app.api.tasks import AUTH_RESPONSES
from app.deps import ApiAdmin, ApiUser, SessionDep
from app.inputs import DbId, Offset, Text
from app.services.guidelines import (
    MAX_GUIDELINE_BYTES,
    GuidelineView,
    current_guidelines,
    guideline_version,
    guidelines_for_task,
    list_versions,
    save_guidelines,
)

router = APIRouter(prefix="/api/v1", tags=["guidelines"])

EXAMPLE = {
    "version_id": 3,
    "job_id": None,
    "version": 2,
    "body": "# How to judge\n\nPrefer the **correct** answer; among correct ones, the clearer.",
    "created_at": "2026-01-01T12:00:00+00:00",
    "created_by": "admin",
}


class GuidelinesOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE]})

    version_id: int = Field(description="What annotations record (`guideline_version_id`): unique across scopes")
    job_id: int | None = Field(description="The batch (the job that made its tasks); null: the project's")
    version: int = Field(description="1, 2, 3 ... within its scope")
    body: str = Field(description="Markdown; empty: none")
    created_at: str
    created_by: str | None = Field(description="The admin who saved it")


class GuidelinesIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"body": "# How to judge\n\nPrefer the **correct** answer; among correct ones, the clearer."},
                {"body": "In this batch, judge only whether the unit conversion is right.", "job_id": 12},
            ]
        },
    )

    body: Text = Field(max_length=MAX_GUIDELINE_BYTES, description="Markdown (images are not shown); empty: none")
    job_id: DbId | None = Field(
        None, description="A batch: the generation job or round that made its tasks. Omitted: the project's."
    )


def _out(g: GuidelineView) -> dict:
    return {
        "version_id": g.id,
        "job_id": g.job_id,
        "version": g.version,
        "body": g.body,
        "created_at": g.created_at.isoformat(),
        "created_by": g.author,
    }


@router.get(
    "/guidelines",
    response_model=GuidelinesOut,
    summary="The guidelines in force",
    description="With `task_id`: those in force for that task (its batch's own, else the project's). With "
    "`job_id`: that batch's own latest version. With neither: the project's latest version.",
    responses={404: {"description": "None written (for that scope), or no such task"}, **AUTH_RESPONSES},
)
def get_guidelines(
    _user: ApiUser,
    db: SessionDep,
    task_id: Annotated[DbId | None, Query(description="a task: the guidelines shown with it")] = None,
    job_id: Annotated[DbId | None, Query(description="a batch: its own guidelines")] = None,
) -> dict:
    if task_id is not None and job_id is not None:
        raise HTTPException(422, "give task_id or job_id, not both")
    if task_id is not None:
        found = guidelines_for_task(db, task_id=task_id)
    else:
        found = current_guidelines(db, job_id=job_id)
    db.rollback()
    if found is None:
        raise HTTPException(404, "no guidelines have been written for this yet")
    return _out(found)


@router.put(
    "/guidelines",
    response_model=GuidelinesOut,
    status_code=201,
    summary="Save the guidelines as a new version (admins)",
    description="The text becomes the newest version of the project's guidelines, or of one batch's with "
    "`job_id`; older versions are kept. The same text as the current version stores nothing and answers 200.",
    responses={
        200: {"description": "Unchanged: the current version", "content": {"application/json": {"example": EXAMPLE}}},
        404: {"description": "`job_id` is not a job that makes tasks"},
        409: {"description": "Another admin saved the same scope at the same moment"},
        422: {"description": "Text that cannot be shown (a NUL, a bidi override) or over 256 KiB"},
        **AUTH_RESPONSES,
    },
)
def put_guidelines(body: GuidelinesIn, admin: ApiAdmin, db: SessionDep) -> JSONResponse:
    saved = save_guidelines(db, body=body.body, job_id=body.job_id, author_id=admin.id)
    db.commit()
    return JSONResponse(_out(saved.guidelines), status_code=201 if saved.created else 200)


@router.get(
    "/guidelines/versions",
    response_model=list[GuidelinesOut],
    summary="Every version of the project's guidelines, or of one batch's, newest first",
    responses=AUTH_RESPONSES,
)
def get_guideline_versions(
    _user: ApiUser,
    db: SessionDep,
    job_id: Annotated[DbId | None, Query(description="a batch; omitted: the project's")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> list[dict]:
    versions = list_versions(db, job_id=job_id, limit=limit, offset=offset)
    db.rollback()
    return [_out(g) for g in versions]


@router.get(
    "/guidelines/versions/{version_id}",
    response_model=GuidelinesOut,
    summary="One version of the guidelines, current or old (by the id annotations record)",
    responses={404: {"description": "No such version"}, **AUTH_RESPONSES},
)
def get_guideline_version(version_id: DbId, _user: ApiUser, db: SessionDep) -> dict:
    found = guideline_version(db, version_id)
    db.rollback()
    return _out(found)
