"""The rounds API: `POST /api/v1/rounds`, `GET /api/v1/rounds`, `GET /api/v1/rounds/{id}`,
`POST /api/v1/rounds/{id}/promote`, `POST /api/v1/rounds/{id}/verdict`, `GET|PUT /api/v1/rounds/schedule`,
`POST /api/v1/label-ai` and `GET /api/v1/label-ai/calibration`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from app.deps import ApiAdmin, SessionDep, SettingsDep
from app.inputs import DbId
from app.services.ai_calibration import latest_calibrations
from app.services.ai_feedback import LabelAIConfig, start_label_ai
from app.services.jobs import job_to_dict
from app.services.rounds import RoundConfig, list_rounds, promote_round, round_to_dict, start_round
from app.services.rounds.report import round_detail
from app.services.schedule import get_schedule, schedule_to_dict, update_schedule
from app.services.users import USERNAME_RE
from app.services.verdict import VERDICT_MAX_TASKS, request_verdict

router = APIRouter(prefix="/api/v1", tags=["rounds"])


class ScheduleUpdate(BaseModel):
    """The schedule's settings to change; those left out (or null) keep their value; 0 switches a trigger off."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool | None = None
    min_new_annotations: int | None = Field(None, description="Start a round after this many new human annotations.")
    every_minutes: float | None = Field(None, description="Start a round every T minutes.")
    config: RoundConfig | None = Field(None, description="The round config the schedule starts rounds with.")


@router.post("/rounds", status_code=201)
def api_start_round(admin: ApiAdmin, db: SessionDep, config: RoundConfig) -> dict[str, Any]:
    """Start a round now: the `round` job (poll `GET /api/v1/jobs/{id}`); `{}` for the defaults. 409 when a round
    is already queued or running; 422 for a bad config, no current policy, or too little data (the message says
    which)."""
    job = start_round(db, config=config, created_by_id=admin.id)
    db.commit()
    return {**job_to_dict(job), "number": job.round_number}


@router.post("/rounds/{round_id}/promote")
def api_promote_round(round_id: DbId, admin: ApiAdmin, db: SessionDep) -> dict[str, Any]:
    """Make a round's new policy and reward model current by hand (a round the promotion gate held back). 404 for
    no such round; 409 for a round with no new models (not succeeded)."""
    job = promote_round(db, round_id)
    db.commit()
    return round_to_dict(job)


class VerdictRequest(BaseModel):
    """How many eval prompts to put the new and the previous policy's responses on, side by side."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"count": 32}, {}]})
    count: int | None = Field(
        None,
        ge=1,
        le=VERDICT_MAX_TASKS,
        description="Eval prompts (one blind pairwise task each); default the round's verdict_tasks (or 32).",
    )


@router.post("/rounds/{round_id}/verdict", status_code=201)
def api_request_verdict(
    round_id: DbId, admin: ApiAdmin, db: SessionDep, body: VerdictRequest | None = None
) -> dict[str, Any]:
    """Queue a round's human verdict: a `generate` job samples one response per eval prompt from the round's new
    policy and from the one it was evaluated against (same settings and seed) and makes blind pairwise tasks of
    them (poll `GET /api/v1/jobs/{id}`, then `GET /api/v1/rounds/{id}`'s `human_verdict`). 404 for no such round;
    409 for a round that has not succeeded, or whose verdict is already queued or made; 422 with no previous
    policy or no eval prompts."""
    job = request_verdict(db, round_id, count=body.count if body else None, created_by_id=admin.id)
    db.commit()
    return job_to_dict(job)


@router.post("/label-ai", status_code=201)
def api_label_ai(admin: ApiAdmin, db: SessionDep, config: LabelAIConfig) -> dict[str, Any]:
    """Label pending tasks with an AI judge: the `label-ai` job (poll `GET /api/v1/jobs/{id}`); `{}` labels with
    the current reward model."""
    job = start_label_ai(db, config=config, created_by_id=admin.id)
    db.commit()
    return job_to_dict(job)


class KindCalibration(BaseModel):
    kind: str
    n: int = Field(description="Comparisons: pairwise tasks, or pairs within rankings; 0: nothing to compare.")
    agreed: int
    rate: float | None = Field(description="agreed / n; null: unknown (no human labels of this kind to compare).")
    low: float | None = Field(description="Wilson 95% interval, low end.")
    high: float | None
    trusted: bool = Field(description="rate at or above the trusted minimum (RLHF_AI_MIN_AGREEMENT).")
    text: str = Field(description="The figure in words.")


class JudgeCalibration(BaseModel):
    annotator_id: int
    annotator: str = Field(description="The AI judge's annotator identity (its labels' user).")
    judge: str = Field(description="The judge and its model.")
    job_id: int | None = Field(description="The label-ai job that calibrated it.")
    created_at: str
    threshold: float = Field(description="The trusted minimum agreement a round asks of AI labels.")
    kinds: list[KindCalibration]


CALIBRATION_EXAMPLE = {
    "annotator_id": 7,
    "annotator": "ai-rm-rm-round-3-12",
    "judge": "reward_model rm-round-3#12",
    "job_id": 41,
    "created_at": "2026-12-08T00:40:12+00:00",
    "threshold": 0.7,
    "kinds": [
        {
            "kind": "pairwise",
            "n": 50,
            "agreed": 41,
            "rate": 0.82,
            "low": 0.69,
            "high": 0.9,
            "trusted": True,
            "text": "82% [69%, 90%] (41/50)",
        },
        {
            "kind": "ranking",
            "n": 0,
            "agreed": 0,
            "rate": None,
            "low": None,
            "high": None,
            "trusted": False,
            "text": "agreement unknown: no human-labelled ranking tasks to compare",
        },
    ],
}


@router.get(
    "/label-ai/calibration",
    response_model=list[JudgeCalibration],
    responses={200: {"content": {"application/json": {"examples": {"one judge": {"value": [CALIBRATION_EXAMPLE]}}}}}},
)
def api_label_ai_calibration(
    admin: ApiAdmin,
    db: SessionDep,
    settings: SettingsDep,
    annotator: Annotated[
        str | None, Query(pattern=USERNAME_RE.pattern, description="One AI judge, by its annotator's username.")
    ] = None,
) -> list[dict[str, Any]]:
    """The latest calibration of each AI judge (newest first): its agreement with human labels per task kind, from
    `label-ai`'s sample of human-labelled tasks. `[]`: no judge calibrated yet, so agreement unknown."""
    return latest_calibrations(db, threshold=settings.ai_min_agreement, annotator=annotator)


@router.get("/rounds")
def api_list_rounds(admin: ApiAdmin, db: SessionDep) -> list[dict[str, Any]]:
    """Rounds, newest first, with their evaluation figures."""
    return [round_to_dict(j) for j in list_rounds(db)]


@router.get("/rounds/schedule")
def api_get_schedule(admin: ApiAdmin, db: SessionDep) -> dict[str, Any]:
    row = get_schedule(db)
    db.commit()
    return schedule_to_dict(row, db)


@router.put("/rounds/schedule")
def api_put_schedule(admin: ApiAdmin, db: SessionDep, body: ScheduleUpdate) -> dict[str, Any]:
    """Change the schedule; fields left out keep their value; 0 switches a trigger off."""
    row = update_schedule(
        db,
        enabled=body.enabled,
        min_new_annotations=body.min_new_annotations,
        every_minutes=body.every_minutes,
        config=body.config,
    )
    db.commit()
    return schedule_to_dict(row, db)


# After /rounds/schedule, so that path is never read as a round id.
@router.get(
    "/rounds/{round_id}",
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {
                        "id": 12,
                        "number": 3,
                        "status": "succeeded",
                        "policy_id": 7,
                        "baseline_policy_id": 5,
                        "evaluation": {"rm_win_rate": 0.64, "rm_win_rate_se": 0.04, "gold_win_rate": 0.58},
                        "human_verdict": {
                            "policy_id": 7,
                            "baseline_id": 5,
                            "tasks": 32,
                            "comparisons": 30,
                            "wins": 17,
                            "ties": 2,
                            "losses": 11,
                            "win_rate": 0.6,
                            "low": 0.42,
                            "high": 0.75,
                            "job_id": 13,
                            "job_status": "succeeded",
                        },
                    }
                }
            }
        }
    },
)
def api_get_round(round_id: DbId, admin: ApiAdmin, db: SessionDep) -> dict[str, Any]:
    """One round: its figures as in the list, the policy it was compared with (`baseline_policy_id`), and the human
    verdict (`human_verdict`: people's win-rate of the new policy over that one on blind eval-prompt pairs, ties
    counting half, with its Wilson 95% interval `low`..`high`) beside the reward model's and the gold judge's
    win-rates (`evaluation.rm_win_rate`, `evaluation.gold_win_rate`). 404 for no such round."""
    return round_detail(db, round_id)
