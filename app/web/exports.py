"""/admin/exports: pick a format and filters; the download is written to the data dir first, then served with
its sha256 (`Repr-Digest`) and row count (`X-Row-Count`), exactly as the API does."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from app.deps import ADMIN_PAGES, ExportQuery, PageAdmin, SessionDep, SettingsDep, export_response
from app.services.exports import FORMATS, MARGIN_BY_STRENGTH, export_download
from app.services.users import list_users
from app.templating import render
from domain.vocabulary import ANNOTATOR_WEIGHTINGS, LABEL_SETS

router = APIRouter(include_in_schema=False, dependencies=ADMIN_PAGES)


@router.get("/admin/exports")
def exports_page(request: Request, _admin: PageAdmin, db: SessionDep) -> Response:
    annotators = [u for u in list_users(db) if u.role == "annotator"]
    return render(
        request,
        "admin_exports.html",
        {
            "formats": FORMATS,
            "annotators": annotators,
            "margins": MARGIN_BY_STRENGTH,
            "weightings": ANNOTATOR_WEIGHTINGS,
            "label_sets": LABEL_SETS,
        },
    )


@router.get("/admin/exports/download")
def download(
    _admin: PageAdmin, settings: SettingsDep, query: Annotated[ExportQuery, Depends()], format: str = "trl"
) -> Response:
    return export_response(export_download(data_dir=settings.data_dir, fmt=format, **asdict(query)))
