"""/admin/exports: pick a format and filters; the download is written to the data dir first, then served with
its sha256 (`Repr-Digest`) and row count (`X-Row-Count`), exactly as the API does."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask

from app.deps import PageAdmin, SessionDep, SettingsDep, verify_csrf
from app.services.exports import FORMATS, MARGIN_BY_STRENGTH, export_download
from app.services.users import list_users
from app.templating import render

router = APIRouter(include_in_schema=False, dependencies=[Depends(verify_csrf)])


@router.get("/admin/exports")
def exports_page(request: Request, _admin: PageAdmin, db: SessionDep) -> Response:
    annotators = [u for u in list_users(db) if u.role == "annotator"]
    return render(
        request, "admin_exports.html", {"formats": FORMATS, "annotators": annotators, "margins": MARGIN_BY_STRENGTH}
    )


@router.get("/admin/exports/download")
def download(
    _admin: PageAdmin,
    settings: SettingsDep,
    format: str = "trl",
    since: str | None = None,
    until: str | None = None,
    until_id: str | None = None,
    source: str | None = None,
    annotator: Annotated[list[str] | None, Query()] = None,
    split: str | None = None,
    min_agreement: str | None = None,
    include_ties: bool = False,
    csv: bool = False,
) -> Response:
    # The form sends empty strings for unset fields and its numbers as text: the service reads both.
    export = export_download(
        data_dir=settings.data_dir,
        fmt=format,
        since=since,
        until=until,
        until_id=until_id,
        source=source,
        annotators=annotator,
        split=split,
        min_agreement=min_agreement,
        include_ties=include_ties,
        as_csv=csv,
    )
    return FileResponse(
        export.path,
        filename=export.filename,
        media_type=export.media_type,
        headers=export.headers,
        background=BackgroundTask(export.remove),
    )
