"""The Rounds page's data: the rounds, the start form's settings, the schedule, the current policy, and each AI
judge's latest calibration."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from app.services.ai_calibration import DEFAULT_CALIBRATION_TASKS, latest_calibrations
from app.services.rounds.config import RoundConfig
from app.services.rounds.form import start_form
from app.services.rounds.lineage import current_policy
from app.services.rounds.listing import list_rounds, round_summary
from app.services.rounds.start import preference_pairs, train_prompts
from app.services.schedule import get_schedule, schedule_to_dict
from app.settings import get_settings
from domain.vocabulary import FINISHED_JOB_STATUSES


def rounds_overview(session: Session, *, algo: str | None = None, with_form: bool = True) -> dict[str, Any]:
    """The page for the start form of `algo` (the default algorithm when None; RoundError for an unknown one).
    `with_form=False`: the rounds table alone (its poll), without counting the data the form is sized from.
    Flushes (the schedule row is created on first use); the caller commits."""
    form = None
    if with_form:
        # the data a round started now would take (its default filters): what the stage lengths are sized from
        size = {"prompts": train_prompts(session), "pairs": preference_pairs(session, config=RoundConfig())}
        form = start_form(algo, size)
    jobs = list_rounds(session)
    schedule = get_schedule(session)
    threshold = get_settings().ai_min_agreement
    return {
        "ai_calibrations": latest_calibrations(session, threshold=threshold) if with_form else [],
        "ai_min_agreement": threshold,
        "default_calibration": DEFAULT_CALIBRATION_TASKS,
        "rounds": [round_summary(j) for j in jobs],
        "start_form": form,
        "any_active": any(j.status not in FINISHED_JOB_STATUSES for j in jobs),
        "schedule": schedule_to_dict(schedule, session),
        "current": current_policy(session),
        "schedule_config": json.dumps(schedule.config or {}, indent=2),
    }
