"""/admin: the dashboard — what there is, what is current, what is running, where to go next."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.deps import ADMIN_PAGES, PageAdmin, SessionDep
from app.services.dashboard import admin_dashboard
from app.services.world_build import duration
from app.templating import render

router = APIRouter(include_in_schema=False, dependencies=ADMIN_PAGES)


@router.get("/admin")
def dashboard(request: Request, _admin: PageAdmin, db: SessionDep) -> Response:
    ctx = {**vars(admin_dashboard(db)), "duration": duration}  # duration: a formatter the template calls
    # htmx polls the world build's region alone while it runs (the region stops polling once it has ended)
    return render(request, "admin.html", ctx, block="world_build")
