"""JSON API for tasks: import (admins), the annotator's next task, skip."""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.db import get_engine, get_sessionmaker
from app.deps import ApiAdmin, SessionDep, SettingsDep
from app.security import hash_token
from app.services.assignment import AssignmentError, Db, next_task, prepared, skip_task
from app.services.tasks import TaskImportError, import_task_specs, parse_task_items
from app.settings import Settings, get_settings
from app.write_gate import sqlite_write_gate_async


def _gate_path() -> str | None:
    engine = get_engine()
    return engine.url.database if engine.dialect.name == "sqlite" else None


@dataclass(frozen=True)
class TokenUser:
    """The bearer token's user as the annotate services need it. Loading an ORM User per request cost about
    1 ms (as much as the rest of the auth); the services only read `id`."""

    id: int
    role: str


TOKEN_USER = prepared(
    "SELECT u.id, u.role FROM api_tokens t JOIN users u ON u.id = t.user_id "
    "WHERE t.token_hash = :token_hash AND t.revoked_at IS NULL AND u.is_active"
)


def token_user(request: Request, session: Db) -> TokenUser:
    """deps.get_api_user's rules (bearer scheme, unrevoked token of an active user) in one prepared query."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    row = session.execute(TOKEN_USER, {"token_hash": hash_token(token.strip())}).first()
    if row is None:
        raise HTTPException(401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
    return TokenUser(id=row[0], role=row[1])


Work = Callable[[Any, TokenUser, Settings], Response]


async def as_api_user(request: Request, work: Work, *, core: bool = False) -> Response:
    """The whole hot request: writer gate, database session, bearer-token user, the work (which commits).
    `core=True` gives the work a Core Connection instead of an ORM Session: for the prepared-SQL services
    (next_task, submit_annotation), whose statements then skip the Session's bookkeeping (measured: a fifth of
    the server CPU per annotation).

    SQLite: on the event loop. The gate lets one write transaction per database run at a time anyway, so a worker
    thread buys no concurrency, only hand-offs: the request's hop to the thread and back, and a GIL switch at every
    sqlite3 call (measured with bench/annotate_load.py: half the server CPU per annotation). The loop never waits
    for the gate itself, and queued requests share one hold of it (see app.write_gate). PostgreSQL: in one worker
    thread, where round trips and row-lock waits do not hold up the loop, at most `pg_annotate_concurrency` at once
    (the rest wait on the loop). Sync dependencies would each cost one more hand-off, so the annotate API does not
    use them."""
    path = _gate_path()
    if path is None:
        async with _pg_slots():
            return await run_in_threadpool(_in_transaction, request, work, core)
    async with sqlite_write_gate_async(path):
        return _in_transaction(request, work, core)


_PG_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _pg_slots() -> asyncio.Semaphore:
    """This event loop's limit on concurrent PostgreSQL annotate transactions (a semaphore belongs to one loop)."""
    loop = asyncio.get_running_loop()
    if loop not in _PG_SLOTS:
        _PG_SLOTS[loop] = asyncio.Semaphore(get_settings().pg_annotate_concurrency)
    return _PG_SLOTS[loop]


def _in_transaction(request: Request, work: Work, core: bool) -> Response:
    db = get_engine().connect() if core else get_sessionmaker()()
    try:
        return work(db, token_user(request, db), get_settings())
    except BaseException:
        db.rollback()
        raise
    finally:
        db.close()


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
                }
            ]
        }
    )

    task_id: int
    kind: str = Field(description="pairwise, ranking or rating")
    prompt: str | list[dict[str, str]] = Field(description="A string, or chat messages [{role, content}]")
    responses: list[ResponseOut] = Field(description="In this annotator's (shuffled, recorded) order")
    lease_expires_at: str


class SkipIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "I can't judge code in this language"}]})

    reason: str = Field(min_length=1, max_length=1000)


class SkipOut(BaseModel):
    task_id: int
    status: str = "skipped"


class ImportOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"created": 2, "task_ids": [41, 42]}]})

    created: int
    task_ids: list[int]


@router.post(
    "/tasks",
    status_code=201,
    response_model=ImportOut,
    summary="Import tasks (admins)",
    description="The same objects as the JSONL lines of `rlhf tasks import`, as one JSON list. All or nothing: "
    "any bad item -> 422 listing item numbers (1-based, as `line`) and reasons; nothing stored.",
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
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.max_upload_bytes:
        raise HTTPException(413, f"the body is over the {settings.max_upload_bytes} byte upload limit")
    body = await request.body()
    if len(body) > settings.max_upload_bytes:
        raise HTTPException(413, f"the body is over the {settings.max_upload_bytes} byte upload limit")
    try:
        items = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
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
    return JSONResponse({"created": len(result.task_ids), "task_ids": result.task_ids}, status_code=201)


@router.get(
    "/tasks/next",
    response_model=NextTaskOut,
    summary="The next task for this annotator",
    description="Returns the task you already hold a lease on, otherwise leases the next one (highest priority, "
    "then oldest) for the lease time. 204 when nothing is left for you.",
    responses={204: {"description": "Nothing left for this annotator"}, **AUTH_RESPONSES},
)
async def next_task_api(request: Request) -> Response:
    return await as_api_user(request, next_work, core=True)


def next_work(db: Connection, user: TokenUser, settings: Settings) -> Response:
    """The next-task transaction, for this route and for app.annotate_fast_path."""
    offer = next_task(db, user=user, lease_minutes=settings.lease_minutes)
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
        }
    )


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
async def skip_task_api(request: Request, task_id: int, body: SkipIn) -> Response:
    def work(db: Session, user: TokenUser, _settings: Settings) -> Response:
        try:
            skip_task(db, user=user, task_id=task_id, reason=body.reason)
        except AssignmentError as exc:
            db.rollback()
            raise HTTPException(exc.status, str(exc)) from None
        db.commit()
        return JSONResponse({"task_id": task_id, "status": "skipped"})

    return await as_api_user(request, work)
