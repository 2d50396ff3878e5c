"""Rounds pages: the admin page (start a round with its settings, the schedule, the list of rounds), a round's
report (snapshot and its download, samples before/after, win-rates, KL, length, reward-hacking warnings, the human
verdict and the button that queues it)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from app.deps import ADMIN_PAGES, PageAdmin, SessionDep, SettingsDep
from app.inputs import DbId
from app.services.ai_feedback import LabelAIError, start_label_ai
from app.services.rounds import RoundError
from app.services.rounds.form import start_round_from_form
from app.services.rounds.overview import rounds_overview
from app.services.rounds.promotion import promote_round
from app.services.rounds.report import round_report, snapshot_download, snapshot_file
from app.services.schedule import ScheduleError, update_schedule
from app.services.snapshots import MANIFEST
from app.services.verdict import request_verdict
from app.templating import is_htmx, render
from domain.vocabulary import ROUND_ALGOS

router = APIRouter(dependencies=ADMIN_PAGES, include_in_schema=False)


def _rounds_page(request: Request, db, *, status_code: int = 200, algo: str | None = None, **extra: Any) -> Response:
    # htmx asks for one block: the start form of another algorithm (?algo=), or the polled table of rounds
    block = None if status_code != 200 else "round_start" if algo else "round_table"
    table_poll = block == "round_table" and is_htmx(request)  # every 2 s while a round runs: no form to size
    context = rounds_overview(db, algo=algo, with_form=not table_poll)
    db.commit()  # the schedule row is created on first use
    return render(request, "rounds.html", {**context, **extra}, block=block, status_code=status_code)


@router.get("/admin/rounds")
def rounds_page(request: Request, admin: PageAdmin, db: SessionDep, algo: str | None = None) -> Response:
    return _rounds_page(request, db, algo=algo)


@router.post("/admin/rounds")
async def start_round_form(request: Request, admin: PageAdmin, db: SessionDep) -> Response:
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}

    def work() -> Response:  # off the loop: a write transaction may wait for the SQLite writer gate
        try:
            job = start_round_from_form(db, form, created_by_id=admin.id)
            db.commit()
        except RoundError as exc:
            db.rollback()
            algo = form.get("algo") if form.get("algo") in ROUND_ALGOS else None
            return _rounds_page(request, db, status_code=exc.status, algo=algo, start_error=str(exc), form=form)
        return RedirectResponse(f"/admin/rounds/{job.id}", status_code=303)

    return await run_in_threadpool(work)


@router.post("/admin/rounds/schedule")
async def schedule_form(request: Request, admin: PageAdmin, db: SessionDep) -> Response:
    form = await request.form()

    def work() -> Response:  # off the loop: a write transaction may wait for the SQLite writer gate
        try:
            config = json.loads(str(form.get("config") or "{}"))
            update_schedule(
                db,
                min_new_annotations=int(form.get("min_new_annotations") or 0),
                every_minutes=float(form.get("every_minutes") or 0),
                config=config,
                enabled=form.get("enabled") == "on",
            )
            db.commit()
        except (ScheduleError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            db.rollback()
            return _rounds_page(request, db, status_code=422, schedule_error=str(exc))
        return RedirectResponse("/admin/rounds", status_code=303)

    return await run_in_threadpool(work)


@router.post("/admin/rounds/label-ai")
async def label_ai_form(request: Request, admin: PageAdmin, db: SessionDep) -> Response:
    form = await request.form()
    config: dict[str, Any] = {
        "judge": str(form.get("judge") or "reward_model"),
        "limit": str(form.get("limit") or "1000"),
        "calibration": str(form.get("calibration") or "0"),
        "seed": str(form.get("seed") or "0"),
    }
    if form.get("model_id"):
        config["model_id"] = str(form.get("model_id"))

    def work() -> Response:  # off the loop: a write transaction may wait for the SQLite writer gate
        try:
            job = start_label_ai(db, config=config, created_by_id=admin.id)
            db.commit()
        except LabelAIError as exc:
            db.rollback()
            return _rounds_page(request, db, status_code=exc.status, label_ai_error=str(exc))
        return RedirectResponse(f"/admin/jobs/{job.id}", status_code=303)

    return await run_in_threadpool(work)


@router.get("/admin/rounds/{round_id}")
def round_page(request: Request, round_id: DbId, admin: PageAdmin, db: SessionDep, settings: SettingsDep) -> Response:
    return render(request, "round.html", round_report(db, settings.data_dir, round_id), block="live")


@router.post("/admin/rounds/{round_id}/promote")
def promote_round_form(round_id: DbId, admin: PageAdmin, db: SessionDep) -> Response:
    """Promotion by hand of a round the gate held back; back to the round's page (Post/Redirect/Get)."""
    promote_round(db, round_id)  # a refusal is app.main's error page with its status
    db.commit()
    return RedirectResponse(f"/admin/rounds/{round_id}", status_code=303)


@router.post("/admin/rounds/{round_id}/verdict")
def verdict_form(round_id: DbId, admin: PageAdmin, db: SessionDep) -> Response:
    """Queue the round's human verdict (blind pairs of its new and previous policy); back to the round's page
    (Post/Redirect/Get). A refusal is app.main's error page with its status."""
    request_verdict(db, round_id, created_by_id=admin.id)
    db.commit()
    return RedirectResponse(f"/admin/rounds/{round_id}", status_code=303)


@router.get("/admin/rounds/{round_id}/snapshot.tar.gz")
def round_snapshot_download(round_id: DbId, admin: PageAdmin, db: SessionDep, settings: SettingsDep) -> Response:
    archive = snapshot_download(db, settings.data_dir, round_id)
    return FileResponse(archive, media_type="application/gzip", filename=f"round-{round_id}-snapshot.tar.gz")


@router.get("/admin/rounds/{round_id}/snapshot/{name}")
def round_snapshot_file(round_id: DbId, name: str, admin: PageAdmin, db: SessionDep, settings: SettingsDep) -> Response:
    path = snapshot_file(db, settings.data_dir, round_id, name)
    media = "application/json" if name == MANIFEST else "application/x-ndjson"
    return FileResponse(path, media_type=media, filename=name)
