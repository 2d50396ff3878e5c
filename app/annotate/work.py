"""The annotate API's transactions, each a `Work` for app.annotate.transaction.as_api_user: the documented routes
(app.api.tasks, app.api.annotations) and the fast path (app.annotate.middleware) run these same functions. A
service's refusal (a ServiceError) goes up with its own status: app.main answers it for the routes, the
middleware for the fast path, alike."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse, Response

from app.annotate.auth import TokenUser
from app.annotate.transaction import Work
from app.inputs import DbId, Text
from app.services.annotations import (
    MAX_KEY_LENGTH,
    MAX_TIME_SPENT_MS,
    annotation_json,
    list_my_annotations,
    submit_annotation,
    undo_annotation,
)
from app.services.assignment import aware, next_task, renew_lease, skip_task
from app.settings import Settings

IDEMPOTENCY_KEY_MIN, IDEMPOTENCY_KEY_MAX = 1, MAX_KEY_LENGTH
FEEDBACK_FIELDS = ("choice", "chosen_id", "strength", "ranking", "ratings", "critiques", "critique", "rewrite", "flags")


class AnnotationIn(BaseModel):
    """The body of `POST /api/v1/annotations` (the route documents it; the fast path validates with it too)."""

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
                {
                    "task_id": 14,
                    "ratings": {"50": "good", "51": "bad"},
                    "critiques": {"51": "Wrong unit."},
                    "guideline_version_id": 3,
                },
                {"task_id": 15, "choice": "both_bad", "flags": ["unsafe"]},
            ]
        },
    )

    task_id: DbId
    choice: Literal["chosen", "tie", "both_bad"] | None = Field(None, description="pairwise only")
    chosen_id: DbId | None = Field(None, description="pairwise, with choice=chosen: a response id")
    strength: int | None = Field(None, description="pairwise, with choice=chosen: 1 slightly, 2 clearly, 3 much better")
    ranking: list[DbId] | None = Field(None, description="ranking: every response id, best first")
    ratings: dict[str, Literal["good", "bad"]] | None = Field(
        None, description='{"<response id>": "good"|"bad"}: every response for rating tasks, optional otherwise'
    )
    critiques: dict[str, Text] | None = Field(None, description='{"<response id>": text}, optional')
    critique: Text | None = Field(None, description="overall critique, optional")
    rewrite: Text | None = Field(None, description="the ideal response (an SFT demonstration), optional")
    flags: list[Literal["unsafe", "broken"]] | None = None
    time_spent_ms: int | None = Field(None, ge=0, le=MAX_TIME_SPENT_MS)
    guideline_version_id: DbId | None = Field(
        None,
        description="the guideline version you were shown (`guideline_version_id` of the next task), optional: "
        "recorded when it is one of the task's batch or of the project, else the version in force is",
    )


def next_work(db: Connection, user: TokenUser, settings: Settings) -> Response:
    """`GET /api/v1/tasks/next`: the held or newly leased task, or 204 when nothing is left."""
    offer = next_task(
        db,
        user=user,
        lease_minutes=settings.lease_minutes,
        gold_rate=settings.gold_rate,
        qualification_threshold=settings.qualification_bar,
    )
    db.commit()
    if offer is None:
        return Response(status_code=204)
    return JSONResponse(
        {
            "task_id": offer.task_id,
            "kind": offer.kind,
            "prompt": offer.prompt,
            "responses": [{"id": g, "text": t} for g, t in offer.responses],
            "lease_expires_at": offer.lease_expires_at.isoformat(),
            "guideline_version_id": offer.guideline_version_id,
        }
    )


def submit_work(body: AnnotationIn, idempotency_key: str) -> Work:
    """`POST /api/v1/annotations`: 201 stored, 200 replayed."""

    def work(db: Connection, user: TokenUser, settings: Settings) -> Response:
        result = submit_annotation(
            db,
            user=user,
            task_id=body.task_id,
            feedback={k: getattr(body, k) for k in FEEDBACK_FIELDS},
            idempotency_key=idempotency_key,
            time_spent_ms=body.time_spent_ms,
            max_text_bytes=settings.max_text_bytes,
            guideline_version_id=body.guideline_version_id,
        )
        db.commit()
        return JSONResponse({"annotation_id": result.annotation_id}, status_code=200 if result.replayed else 201)

    return work


def skip_work(task_id: int, reason: str) -> Work:
    """`POST /api/v1/tasks/{task_id}/skip`."""

    def work(db: Session, user: TokenUser, _settings: Settings) -> Response:
        skip_task(db, user=user, task_id=task_id, reason=reason)
        db.commit()
        return JSONResponse({"task_id": task_id, "status": "skipped"})

    return work


def renew_work(task_id: int) -> Work:
    """`POST /api/v1/tasks/{task_id}/renew`: the lease runs for the lease time from now."""

    def work(db: Session, user: TokenUser, settings: Settings) -> Response:
        lease = renew_lease(db, user=user, task_id=task_id, lease_minutes=settings.lease_minutes)
        db.commit()
        return JSONResponse({"task_id": task_id, "lease_expires_at": lease.lease_expires_at.isoformat()})

    return work


def list_work(*, limit: int, offset: int) -> Work:
    """`GET /api/v1/annotations`: the caller's own annotations, newest first (read only)."""

    def work(db: Session, user: TokenUser, _settings: Settings) -> Response:
        rows = [annotation_json(a) for a in list_my_annotations(db, user_id=user.id, limit=limit, offset=offset)]
        db.rollback()
        return JSONResponse(rows)

    return work


def undo_work(annotation_id: int) -> Work:
    """`DELETE /api/v1/annotations/{annotation_id}`."""

    def work(db: Session, user: TokenUser, settings: Settings) -> Response:
        annotation = undo_annotation(
            db,
            user=user,
            annotation_id=annotation_id,
            undo_minutes=settings.undo_minutes,
            lease_minutes=settings.lease_minutes,
        )
        out = {
            "annotation_id": annotation.id,
            "task_id": annotation.task_id,
            "deleted_at": aware(annotation.deleted_at).isoformat(),
        }
        db.commit()
        return JSONResponse(out)

    return work
