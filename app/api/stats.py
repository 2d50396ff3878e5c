"""GET /api/v1/stats: counts, throughput, agreement (Krippendorff's alpha), biases, disagreement queue. Admins only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query

from app.db import get_read_sessionmaker
from app.deps import ApiAdmin
from app.services.stats import all_stats

router = APIRouter(prefix="/api/v1", tags=["stats"])


def read_stats(*, source: str, days: int) -> dict[str, Any]:
    if source not in ("human", "ai", "all"):
        raise HTTPException(status_code=422, detail="source must be human, ai or all")
    session = get_read_sessionmaker()()
    try:
        return all_stats(session, source=source, days=days)
    finally:
        session.close()


@router.get("/stats", summary="Annotation figures and agreement")
def get_stats(
    _admin: ApiAdmin,
    source: str = Query("all", description="human, ai or all"),
    days: int = Query(30, ge=1, le=3650, description="throughput window"),
) -> dict[str, Any]:
    return read_stats(source=source, days=days)
