"""The annotator's pages: one task at a time with its guidelines, submit / skip / undo, progress, and the lease
renewal the page's script sends while the annotator works.

Each POST works as a plain form (303 back to /annotate) and with htmx (the #workspace block is swapped in). A submit
that is refused keeps the annotator's text: in the task's own text boxes when it is still theirs, else in a box to
copy it from.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from app.deps import USER_PAGES, PageUser, SessionDep, SettingsDep
from app.inputs import DB_INT_MAX, DbId
from app.models import User
from app.services.annotation_history import LABELS, my_answer
from app.services.annotations import (
    AnnotationConflict,
    AnnotationInvalid,
    submit_annotation,
    undo_annotation,
)
from app.services.annotator_workspace import annotator_history, annotator_workspace
from app.services.assignment import AssignmentError, renew_lease, skip_task
from app.services.gold import qualification_report
from app.settings import Settings
from app.templating import is_htmx, render

# (their write transactions take the SQLite writer gate one by one, as every transaction of the default engine)
router = APIRouter(include_in_schema=False, dependencies=USER_PAGES)

SKIP_REASONS = (
    "I can't judge this topic",
    "The responses are broken or empty",
    "The prompt is unclear",
    "Needs a language I don't read",
    "Other",
)
RECENT = 5  # answers shown beside the task
HISTORY = 50  # answers on the progress page


def _workspace(
    request: Request,
    db,
    user: User,
    settings: Settings,
    *,
    error: str | None = None,
    notice: str | None = None,
    status_code: int = 200,
    kept: dict[str, str] | None = None,
    kept_task: int | None = None,
    finished_task: int | None = None,
) -> Response:
    workspace = annotator_workspace(
        db,
        user=user,
        lease_minutes=settings.lease_minutes,
        undo_minutes=settings.undo_minutes,
        recent=RECENT,
        gold_rate=settings.gold_rate,
        qualification_threshold=settings.qualification_bar,
    )
    db.commit()  # the lease, and the guidelines shown
    ctx: dict[str, Any] = {
        "offer": workspace.offer,
        "guidelines": workspace.guidelines,
        "lease_ms": int(settings.lease_minutes * 60_000),
        "kept": kept or {},
        "kept_task": kept_task,
        "finished_task": finished_task,
        "pending": workspace.pending,
        "labels": LABELS,
        "progress": workspace.history.progress,
        "recent": workspace.history.recent,
        "error": error,
        "notice": notice,
        "undoable": workspace.history.undoable,
        "idempotency_key": secrets.token_urlsafe(18),
        "rendered_at": int(time.time() * 1000),
        "skip_reasons": SKIP_REASONS,
        "undo_minutes": settings.undo_minutes,
        "refused": workspace.refused,
        "qualification": workspace.qualification,
    }
    return render(request, "annotate.html", ctx, block="workspace", status_code=status_code)


def _done(
    request: Request, db, user: User, settings: Settings, notice: str, finished_task: int | None = None
) -> Response:
    """After a successful POST: htmx gets the next task in place; a plain form is redirected (no resubmit).
    `finished_task`: a task that is done with (saved or skipped), so the page's script drops its draft."""
    if is_htmx(request):
        return _workspace(request, db, user, settings, notice=notice, finished_task=finished_task)
    return RedirectResponse(f"/annotate?done={finished_task}" if finished_task else "/annotate", status_code=303)


def _int(value: Any) -> int | None:
    """A form field as an integer a database column can hold, else None."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if -DB_INT_MAX - 1 <= number <= DB_INT_MAX else None


def feedback_from_form(form: FormData) -> dict[str, Any]:
    """The form's fields -> the same feedback dict the JSON API takes (validated by the service)."""
    feedback: dict[str, Any] = {}
    pick = form.get("pick")
    if pick in ("tie", "both_bad"):
        feedback["choice"] = pick
    elif pick:
        feedback.update(
            choice="chosen",
            chosen_id=_int(pick) if _int(pick) is not None else pick,
            strength=_int(form.get("strength")),
        )
    ranks, ratings, critiques = {}, {}, {}
    for name, value in form.multi_items():
        if not isinstance(value, str):
            continue
        prefix, _, gid = name.partition("_")
        if prefix == "rank" and gid:
            ranks[gid] = value
        elif prefix == "rating" and gid and value:
            ratings[gid] = value
        elif prefix == "critique" and gid and value.strip():
            critiques[gid] = value
    if ranks:
        numbers = {gid: _int(v) for gid, v in ranks.items()}
        if None in numbers.values() or sorted(numbers.values()) != list(range(1, len(numbers) + 1)):
            raise AnnotationInvalid(f"give each response a different rank from 1 to {len(numbers)}")
        feedback["ranking"] = [
            _int(g) if _int(g) is not None else g for g, _ in sorted(numbers.items(), key=lambda kv: kv[1])
        ]
    if ratings:
        feedback["ratings"] = ratings
    if critiques:
        feedback["critiques"] = critiques
    for name in ("critique", "rewrite"):
        if isinstance(form.get(name), str) and form.get(name).strip():
            feedback[name] = form.get(name)
    flags = [f for f in form.getlist("flag") if isinstance(f, str)]
    if flags:
        feedback["flags"] = flags
    return feedback


def texts_from_form(form: FormData) -> dict[str, str]:
    """The free text the annotator typed (critiques and the rewrite), by field name: what a refused submit keeps."""
    return {
        name: value
        for name, value in form.multi_items()
        if isinstance(value, str)
        and value.strip()
        and (name in ("critique", "rewrite") or (name.startswith("critique_") and name[9:].isdigit()))
    }


def _time_spent(form: FormData) -> int | None:
    """The page's own measure (JS), else the time since the server rendered the form."""
    spent = _int(form.get("time_spent_ms"))
    if spent is None and (rendered := _int(form.get("rendered_at"))) is not None:
        spent = int(time.time() * 1000) - rendered
    return spent if spent is not None and 0 <= spent < 86_400_000 else None


@router.get("/annotate")
def annotate_page(
    request: Request, user: PageUser, db: SessionDep, settings: SettingsDep, done: DbId | None = None
) -> Response:
    return _workspace(request, db, user, settings, finished_task=done)


@router.post("/annotate/submit")
async def submit(request: Request, user: PageUser, db: SessionDep, settings: SettingsDep) -> Response:
    # Form fields are dynamic (rank_<id>, rating_<id>): read the parsed form, then do the DB work off the loop.
    return await run_in_threadpool(_submit, request, await request.form(), user, db, settings)


def _submit(request: Request, form: FormData, user: User, db, settings: Settings) -> Response:
    task_id = _int(form.get("task_id"))
    try:
        if task_id is None:
            raise AnnotationInvalid("the form has no task id: reload the page")
        result = submit_annotation(
            db,
            user=user,
            task_id=task_id,
            feedback=feedback_from_form(form),
            idempotency_key=str(form.get("idempotency_key") or ""),
            time_spent_ms=_time_spent(form),
            max_text_bytes=settings.max_text_bytes,
            guideline_version_id=_int(form.get("guideline_version_id")),
        )
    except (AnnotationInvalid, AnnotationConflict) as exc:
        db.rollback()
        status = 422 if isinstance(exc, AnnotationInvalid) else exc.status
        return _workspace(
            request,
            db,
            user,
            settings,
            error=str(exc),
            status_code=status,
            kept=texts_from_form(form),
            kept_task=task_id,
        )
    db.commit()
    notice = "Saved." if not result.replayed else "Already saved."
    return _done(request, db, user, settings, notice=notice, finished_task=task_id)


@router.post("/annotate/skip")
async def skip(request: Request, user: PageUser, db: SessionDep, settings: SettingsDep) -> Response:
    return await run_in_threadpool(_skip, request, await request.form(), user, db, settings)


def _skip(request: Request, form: FormData, user: User, db, settings: Settings) -> Response:
    task_id = _int(form.get("task_id"))
    reason = str(form.get("reason") or "").strip()
    detail = str(form.get("reason_detail") or "").strip()
    if detail:
        reason = f"{reason}: {detail}" if reason else detail
    try:
        if task_id is None:
            raise AssignmentError("the form has no task id: reload the page", status=422)
        skip_task(db, user=user, task_id=task_id, reason=reason or "no reason given")
    except AssignmentError as exc:
        db.rollback()
        return _workspace(request, db, user, settings, error=str(exc), status_code=exc.status)
    db.commit()
    return _done(request, db, user, settings, notice="Skipped.", finished_task=task_id)


@router.post("/annotate/renew")
async def renew(request: Request, user: PageUser, db: SessionDep, settings: SettingsDep) -> Response:
    """The page's script renews the lease while the annotator works (the page counterpart of
    `POST /api/v1/tasks/{id}/renew`): htmx-style requests get the lease line, refused or not; a plain form goes
    back to /annotate."""
    return await run_in_threadpool(_renew, request, await request.form(), user, db, settings)


def _renew(request: Request, form: FormData, user: User, db, settings: Settings) -> Response:
    task_id = _int(form.get("task_id"))
    problem, status, lease = None, 200, None
    try:
        if task_id is None:
            raise AssignmentError("the form has no task id: reload the page", status=422)
        lease = renew_lease(db, user=user, task_id=task_id, lease_minutes=settings.lease_minutes)
        db.commit()
    except AssignmentError as exc:
        db.rollback()
        problem, status = str(exc), exc.status
    if not is_htmx(request):
        return RedirectResponse("/annotate", status_code=303)
    ctx = {
        "task_id": task_id,
        "expires_at": lease.lease_expires_at if lease else None,
        "lease_ms": int(settings.lease_minutes * 60_000),
        "problem": problem,
        "renewed": lease is not None,
    }
    return render(request, "annotate_lease.html", ctx, status_code=status)


@router.post("/annotate/undo")
async def undo(request: Request, user: PageUser, db: SessionDep, settings: SettingsDep) -> Response:
    return await run_in_threadpool(_undo, request, await request.form(), user, db, settings)


def _undo(request: Request, form: FormData, user: User, db, settings: Settings) -> Response:
    annotation_id = _int(form.get("annotation_id"))
    try:
        if annotation_id is None:
            raise AnnotationConflict("the form has no annotation id", status=422)
        undo_annotation(
            db,
            user=user,
            annotation_id=annotation_id,
            undo_minutes=settings.undo_minutes,
            lease_minutes=settings.lease_minutes,
        )
    except AnnotationConflict as exc:
        db.rollback()
        return _workspace(request, db, user, settings, error=str(exc), status_code=exc.status)
    db.commit()
    return _done(request, db, user, settings, notice="Undone: the task is yours again.")


@router.get("/annotate/progress")
def progress_page(request: Request, user: PageUser, db: SessionDep, settings: SettingsDep) -> Response:
    history = annotator_history(db, user_id=user.id, undo_minutes=settings.undo_minutes, limit=HISTORY)
    db.rollback()  # a read: let go of the database before rendering
    ctx = {
        "progress_only": True,
        "progress": history.progress,
        "recent": history.recent,
        "labels": LABELS,
        "undoable": history.undoable,
        "undo_minutes": settings.undo_minutes,
    }
    return render(request, "annotate.html", ctx, block="progress")


@router.get("/annotate/qualification")
def qualification_page(request: Request, user: PageUser, db: SessionDep, settings: SettingsDep) -> Response:
    """The annotator's qualification result and, once the set is graded, each task's right answer and explanation."""
    report = qualification_report(db, user_id=user.id, threshold=settings.qualification_bar)
    db.rollback()  # a read: let go of the database before rendering
    return render(request, "annotate_qualification.html", {"report": report, "labels": LABELS})


@router.get("/annotate/history/{annotation_id}")
def review_page(request: Request, annotation_id: DbId, user: PageUser, db: SessionDep) -> Response:
    """One past answer, read-only: the prompt, the responses as they were shown, and what was chosen."""
    answer = my_answer(db, user_id=user.id, annotation_id=annotation_id)
    db.rollback()  # a read: let go of the database before rendering
    return render(request, "annotate_review.html", {"answer": answer})
