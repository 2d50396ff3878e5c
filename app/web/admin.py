"""/admin: the dashboard — what there is, what is current, what is running, where to go next."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.deps import ADMIN_PAGES, PageAdmin, SessionDep
from app.services.jobs import list_jobs
from app.services.models_registry import current_model
from app.services.stats import counts
from app.services.world_build import duration, world_build_view
from app.templating import render

router = APIRouter(include_in_schema=False, dependencies=ADMIN_PAGES)


@router.get("/admin")
def dashboard(request: Request, _admin: PageAdmin, db: SessionDep) -> Response:
    ctx = {
        "counts": counts(db),
        "policy": current_model(db, kind="policy"),
        "reward": current_model(db, kind="reward"),
        "jobs": list_jobs(db, limit=8),
        "build": world_build_view(db),
        "duration": duration,
    }
    # htmx polls the world build's region alone while it runs (the region stops polling once it has ended)
    return render(request, "admin.html", ctx, block="world_build")
