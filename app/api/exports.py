"""GET /api/v1/exports/{format}: the export is written to a file in the data dir, then served with its sha256
(`Repr-Digest`) and row count (`X-Row-Count`), and removed once sent. Admins only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from app.deps import ApiAdmin, SettingsDep
from app.services.exports import FORMATS, export_download
from domain.vocabulary import SOURCES

router = APIRouter(prefix="/api/v1", tags=["exports"])


@router.get("/exports/{fmt}", summary=f"Export annotations ({', '.join(FORMATS)})")
def get_export(
    fmt: str,
    _admin: ApiAdmin,
    settings: SettingsDep,
    since: str | None = None,
    until: str | None = None,
    until_id: int | None = None,
    source: str | None = Query(None, description=f"{', '.join(SOURCES)} or all"),
    annotator: Annotated[list[str] | None, Query(description="username or pseudonymous id; repeatable")] = None,
    split: str | None = None,
    min_agreement: float | None = None,
    include_ties: bool = False,
    csv: bool = Query(False, description="rich only: CSV with formula injection neutralised"),
) -> FileResponse:
    download = export_download(
        data_dir=settings.data_dir,
        fmt=fmt,
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
        download.path,
        filename=download.filename,
        media_type=download.media_type,
        headers=download.headers,
        background=BackgroundTask(download.remove),
    )
