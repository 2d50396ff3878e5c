"""/admin/stats: counts, throughput, Krippendorff's alpha, biases, and the disagreement queue."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.deps import ADMIN_PAGES, PageAdmin
from app.services.stats import read_stats
from app.templating import render

router = APIRouter(include_in_schema=False, dependencies=ADMIN_PAGES)


@router.get("/admin/stats")
def stats_page(request: Request, _admin: PageAdmin, source: str = "all", days: int = 30) -> Response:
    stats = read_stats(source=source, days=max(1, min(days, 3650)))
    return render(request, "admin_stats.html", {"stats": stats, "source": source, "days": days})
