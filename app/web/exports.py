"""/admin/exports: pick a format and filters; the download is written to the data dir first, then served with
its sha256 (`Repr-Digest`) and row count (`X-Row-Count`), exactly as the API does."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from app.api.exports import export_response
from app.deps import PageAdmin, SessionDep, SettingsDep, verify_csrf
from app.services.exports import FORMATS, MARGIN_BY_STRENGTH
from app.services.users import list_users
from app.templating import render

router = APIRouter(include_in_schema=False, dependencies=[Depends(verify_csrf)])


@router.get("/admin/exports")
def exports_page(request: Request, _admin: PageAdmin, db: SessionDep) -> Response:
    annotators = [u for u in list_users(db) if u.role == "annotator"]
    return render(
        request, "admin_exports.html", {"formats": FORMATS, "annotators": annotators, "margins": MARGIN_BY_STRENGTH}
    )


def _blank_to_none(value: str | None) -> str | None:
    return value if value not in (None, "") else None


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
    from fastapi import HTTPException

    try:  # the form sends empty strings for unset fields
        until_id_value = int(until_id) if _blank_to_none(until_id) else None
        agreement_value = float(min_agreement) if _blank_to_none(min_agreement) else None
    except ValueError:
        raise HTTPException(status_code=422, detail="until id must be an integer and min agreement a number") from None
    return export_response(
        data_dir=settings.data_dir,
        fmt=format,
        since=_blank_to_none(since),
        until=_blank_to_none(until),
        until_id=until_id_value,
        source=_blank_to_none(source),
        annotators=[a for a in (annotator or []) if a],
        split=_blank_to_none(split),
        min_agreement=agreement_value,
        include_ties=include_ties,
        as_csv=csv,
    )
