"""GET /api/v1/stats: counts, throughput, agreement (Krippendorff's alpha), biases, disagreement queue. Admins only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from app.deps import ApiAdmin
from app.services.stats import read_stats

router = APIRouter(prefix="/api/v1", tags=["stats"])


@router.get("/stats", summary="Annotation figures and agreement")
def get_stats(
    _admin: ApiAdmin,
    source: str = Query("all", description="human, ai or all"),
    days: int = Query(30, ge=1, le=3650, description="throughput window"),
) -> dict[str, Any]:
    return read_stats(source=source, days=days)
