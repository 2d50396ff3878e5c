"""GET /api/v1/exports/{format}: the export is written to a file in the data dir, then served with its sha256
(`Repr-Digest`) and row count (`X-Row-Count`), and removed once sent. Admins only."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse

from app.deps import ApiAdmin, ExportQuery, SettingsDep, export_response
from app.inputs import DbId
from app.services.exports import FORMATS, export_download
from domain.vocabulary import ANNOTATOR_WEIGHTINGS, LABEL_SETS, SOURCES

router = APIRouter(prefix="/api/v1", tags=["exports"])


@dataclass
class ApiExportQuery(ExportQuery):
    """The export query with the API's types and descriptions (its OpenAPI parameters)."""

    until_id: DbId | None = None
    source: Annotated[str | None, Query(description=f"{', '.join(SOURCES)} or all")] = None
    annotators: Annotated[
        list[str] | None, Query(alias="annotator", description="username or pseudonymous id; repeatable")
    ] = None
    min_agreement: float | None = None
    as_csv: Annotated[bool, Query(alias="csv", description="rich only: CSV with formula injection neutralised")] = False
    annotator_weighting: Annotated[
        str | None,
        Query(
            description=f"{' | '.join(ANNOTATOR_WEIGHTINGS)}: other than none, each preference line gets its "
            "annotator's `weight` (as a round's snapshot)",
            examples=["dawid_skene"],
        ),
    ] = None
    labels: Annotated[
        str | None,
        Query(
            description=f"{' | '.join(LABEL_SETS)}: adjudicated gives a task's reviewer's final label in place of its "
            "human annotations (`rich` marks it: adjudicated, reviewer, review_note)",
            examples=["adjudicated"],
        ),
    ] = None


@router.get("/exports/{fmt}", summary=f"Export annotations ({', '.join(FORMATS)})")
def get_export(
    fmt: str, _admin: ApiAdmin, settings: SettingsDep, query: Annotated[ApiExportQuery, Depends()]
) -> FileResponse:
    return export_response(export_download(data_dir=settings.data_dir, fmt=fmt, **asdict(query)))
