"""GET /api/v1/exports/{format}: the export is written to a file in the data dir, then served with its sha256
(`Repr-Digest`) and row count (`X-Row-Count`). Admins only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from app.deps import ApiAdmin, SettingsDep
from app.services.exports import FORMATS, ExportError, export_to_data_dir, filters_from_strings, repr_digest

router = APIRouter(prefix="/api/v1", tags=["exports"])


def export_response(
    *,
    data_dir,
    fmt: str,
    since: str | None,
    until: str | None,
    until_id: int | None,
    source: str | None,
    annotators: list[str] | None,
    split: str | None,
    min_agreement: float | None,
    include_ties: bool,
    as_csv: bool,
) -> FileResponse:
    if fmt not in FORMATS:
        raise HTTPException(status_code=404, detail=f"no export format {fmt!r}; formats: {', '.join(FORMATS)}")
    try:
        filters = filters_from_strings(
            since=since,
            until=until,
            until_id=until_id,
            source=source,
            annotators=annotators,
            split=split,
            min_agreement=min_agreement,
        )
        result = export_to_data_dir(
            data_dir=data_dir, fmt=fmt, filters=filters, include_ties=include_ties, as_csv=as_csv
        )
    except ExportError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    name = f"{fmt}.{'csv' if as_csv else 'jsonl'}"

    def cleanup() -> None:
        result.path.unlink(missing_ok=True)
        result.path.with_name(result.path.name + ".sha256").unlink(missing_ok=True)

    return FileResponse(
        result.path,
        filename=name,
        media_type="text/csv; charset=utf-8" if as_csv else "application/jsonl; charset=utf-8",
        headers={"Repr-Digest": repr_digest(result.sha256), "X-Row-Count": str(result.rows)},
        background=BackgroundTask(cleanup),
    )


@router.get("/exports/{fmt}", summary="Export annotations (trl, trl-conversational, kto, rankings, sft, rich)")
def get_export(
    fmt: str,
    _admin: ApiAdmin,
    settings: SettingsDep,
    since: str | None = None,
    until: str | None = None,
    until_id: int | None = None,
    source: str | None = Query(None, description="human, ai or all"),
    annotator: Annotated[list[str] | None, Query(description="username or pseudonymous id; repeatable")] = None,
    split: str | None = None,
    min_agreement: float | None = None,
    include_ties: bool = False,
    csv: bool = Query(False, description="rich only: CSV with formula injection neutralised"),
) -> FileResponse:
    return export_response(
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
