"""/leaderboard: every policy version ranked by a Bradley–Terry fit over the human comparisons between them."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.deps import ADMIN_PAGES, PageAdmin, SessionDep
from app.services.leaderboard import leaderboard
from app.templating import render

router = APIRouter(include_in_schema=False, dependencies=ADMIN_PAGES)


@router.get("/leaderboard")
def leaderboard_page(request: Request, _admin: PageAdmin, db: SessionDep) -> Response:
    return render(request, "leaderboard.html", {"board": leaderboard(db)})
