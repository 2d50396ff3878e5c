"""/review: the disagreement queue for reviewers (and admins), a task with every annotation and its annotator, and
the form that records the task's final label with a note (Post/Redirect/Get, works without JS)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.deps import REVIEW_PAGES, PageReviewer, SessionDep
from app.inputs import DbId
from app.services.errors import Conflict
from app.services.review import (
    QUEUE_STATES,
    ReviewError,
    ReviewForm,
    adjudicate_form,
    review_queue,
    review_task,
)
from app.templating import render

router = APIRouter(include_in_schema=False, dependencies=REVIEW_PAGES)


@router.get("/review")
def queue_page(
    request: Request, _reviewer: PageReviewer, db: SessionDep, state: str = "pending", notice: str = ""
) -> Response:
    items = review_queue(db, state=state)
    db.rollback()
    ctx = {"items": items, "state": state, "states": QUEUE_STATES, "notice": notice}
    return render(request, "review.html", ctx)


def _task_page(request: Request, db, task_id: int, *, notice: str = "", error: str = "", status_code: int = 200):
    review = review_task(db, task_id)
    db.rollback()
    ctx = {"r": review, "d": review.detail, "notice": notice, "error": error}
    return render(request, "review_task.html", ctx, status_code=status_code)


@router.get("/review/tasks/{task_id}")
def task_page(request: Request, task_id: DbId, _reviewer: PageReviewer, db: SessionDep, notice: str = "") -> Response:
    return _task_page(request, db, task_id, notice=notice)


@router.post("/review/tasks/{task_id}")
def record(
    request: Request,
    task_id: DbId,
    reviewer: PageReviewer,
    db: SessionDep,
    choice: Annotated[str, Form()] = "",
    strength: Annotated[str, Form()] = "2",
    gen: Annotated[list[str], Form()] = [],  # noqa: B006 (FastAPI copies a Form default)
    rank: Annotated[list[str], Form()] = [],  # noqa: B006
    rating: Annotated[list[str], Form()] = [],  # noqa: B006
    rewrite: Annotated[str, Form()] = "",
    note: Annotated[str, Form()] = "",
) -> Response:
    form = ReviewForm(choice, strength, gen, rank, rating, rewrite, note)
    try:
        adjudicate_form(db, task_id=task_id, reviewer=reviewer, form=form)
    except (ReviewError, Conflict) as exc:
        db.rollback()
        return _task_page(request, db, task_id, error=str(exc), status_code=exc.status)
    db.commit()
    return RedirectResponse(f"/review?notice=task+{task_id}+adjudicated", status_code=303)
