"""GET /api/v1/leaderboard: every policy version ranked by a Bradley–Terry fit over the human comparisons between
them, with bootstrap intervals. Admins only."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from app.deps import ApiAdmin, SessionDep
from app.services.leaderboard import leaderboard

router = APIRouter(prefix="/api/v1", tags=["leaderboard"])

EXAMPLE = {
    "comparisons": 61,
    "anchor_id": 1,
    "bootstrap_rounds": 200,
    "rows": [
        {
            "rank": 1,
            "model_id": 7,
            "name": "policy-r12",
            "stage": "rlhf",
            "round_id": 12,
            "is_current": True,
            "elo": 84.2,
            "low": 21.0,
            "high": 151.7,
            "comparisons": 30,
            "wins": 18.0,
            "anchor": False,
        },
        {
            "rank": 2,
            "model_id": 1,
            "name": "tiny-sft",
            "stage": "sft",
            "round_id": None,
            "is_current": False,
            "elo": 0.0,
            "low": 0.0,
            "high": 0.0,
            "comparisons": 31,
            "wins": 12.0,
            "anchor": True,
        },
    ],
}


@router.get(
    "/leaderboard",
    summary="Policy versions ranked by human comparisons",
    responses={200: {"content": {"application/json": {"example": EXAMPLE}}}},
)
def get_leaderboard(_admin: ApiAdmin, db: SessionDep) -> dict[str, Any]:
    """Policy versions ranked by Bradley–Terry strength (Elo points; the first SFT policy is 0) fitted on every live
    human comparison between responses of two different policies (ties count half), with bootstrap 95% intervals
    (`low`..`high`) and comparison counts. Policies never compared yet come last with `rank` and `elo` null."""
    return asdict(leaderboard(db))
