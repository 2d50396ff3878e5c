"""/admin/data: the data manager. Prompts, tasks and annotations, filtered, searched and paged (one URL: the page,
or its results block for htmx); a task with its responses and every annotation; bulk retire, re-queue and priority
(forms that work without JS: Post/Redirect/Get back to the same filters)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from app.deps import ADMIN_PAGES, PageAdmin, SessionDep
from app.inputs import DB_INT_MAX, DbId
from app.services.data_manager import (
    RESOURCES,
    STATES,
    DataFilterError,
    DataFilters,
    browse,
    bulk_action,
    task_detail,
)
from app.services.errors import ServiceError
from app.templating import render
from domain.vocabulary import SOURCES, SPLITS, TASK_KINDS

router = APIRouter(include_in_schema=False, dependencies=ADMIN_PAGES)


def _filters(
    resource: str = "tasks",
    kind: str = "",
    state: str = "",
    split: str = "",
    tag: str = "",
    annotator: str = "",
    source: str = "",
    round: Annotated[str, Query()] = "",
    q: str = "",
) -> DataFilters:
    round_id = int(round) if round.strip().isdigit() and int(round) <= DB_INT_MAX else None
    if round.strip() and round_id is None:
        raise DataFilterError("round must be a round's id (a number)")
    return DataFilters(
        resource, kind, state, split, tag.strip(), annotator.strip(), source.strip(), round_id, q.strip()
    )


FiltersDep = Annotated[DataFilters, Depends(_filters)]


def _page(
    request: Request,
    db,
    filters: DataFilters,
    before: int | None,
    notice: str = "",
    error: str = "",
    status_code: int = 200,
):
    try:
        page = browse(db, filters, before=before)
    except ServiceError as exc:
        db.rollback()
        page, error, status_code = None, str(exc), exc.status
    db.rollback()
    query = filters.as_query()
    return render(
        request,
        "admin_data.html",
        {
            "filters": filters,
            "page": page,
            "query": urlencode(query),
            "next_url": f"/admin/data?{urlencode({**query, 'before': page.next_before})}"
            if page and page.next_before
            else None,
            "first_url": f"/admin/data?{urlencode(query)}" if before is not None else None,
            "resources": RESOURCES,
            "states": STATES.get(filters.resource, ()),
            "kinds": TASK_KINDS,
            "splits": SPLITS,
            "sources": SOURCES,
            "notice": notice,
            "error": error,
        },
        block="results",
        status_code=status_code,
    )


@router.get("/admin/data")
def data_page(
    request: Request,
    _admin: PageAdmin,
    db: SessionDep,
    filters: FiltersDep,
    before: DbId | None = None,
    notice: str = "",
) -> Response:
    return _page(request, db, filters, before, notice=notice[:200])


@router.get("/admin/data/tasks/{task_id}")
def task_page(request: Request, task_id: DbId, _admin: PageAdmin, db: SessionDep) -> Response:
    detail = task_detail(db, task_id)
    response = render(request, "admin_data_task.html", {"d": detail})
    db.rollback()
    return response


@router.post("/admin/data/bulk")
async def bulk_form(request: Request, _admin: PageAdmin, db: SessionDep) -> Response:
    form = await request.form()
    back = str(form.get("back") or "")
    filters = DataFilters(resource=str(form.get("resource") or "tasks"))
    action = str(form.get("action") or "")
    ids = [str(v) for v in form.getlist("ids")]
    priority = str(form.get("priority") or "").strip()
    return_to = str(form.get("return_to") or "")

    def work() -> Response:  # off the loop: a write transaction may wait for the SQLite writer gate
        try:
            notice = bulk_action(db, resource=filters.resource, action=action, ids=ids, priority=priority)
        except ServiceError as exc:
            db.rollback()
            return _page(request, db, filters, None, error=str(exc), status_code=exc.status)
        db.commit()
        if return_to.startswith("/admin/data/tasks/") and return_to[len("/admin/data/tasks/") :].isdigit():
            return RedirectResponse(return_to, status_code=303)  # back to the task page it came from
        separator = "&" if back else ""
        return RedirectResponse(f"/admin/data?{back}{separator}{urlencode({'notice': notice})}", status_code=303)

    return await run_in_threadpool(work)
