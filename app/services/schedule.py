"""The round schedule: start a round automatically after >= N new human annotations and/or every T minutes.

One row (round_schedules). The worker calls `check_round_schedule` on every poll (a periodic hook, see
app/jobs/registry.py); every worker does, so it is quick and safe to race: the database's partial unique index on
active rounds lets exactly one `round` job be queued or running, and a loser's IntegrityError becomes a no-op.
A due schedule with too little data does not start a round; it waits for the next trigger (N more annotations,
or T more minutes) instead of re-checking on every poll.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app.jobs.registry import periodic_hook
from app.models import Annotation, RoundSchedule, Task, utcnow
from app.services.errors import ServiceError
from app.services.rounds import (
    RoundConfig,
    RoundError,
    active_round,
    as_round_config,
    current_policy,
    parse_round_config,
    preference_pairs,
    start_round,
    too_little_data,
    untrusted_ai_labels,
)
from app.settings import Settings

MAX_NEW_ANNOTATIONS = 2**31 - 1  # a 32-bit column on PostgreSQL
MAX_EVERY_MINUTES = 10 * 366 * 24 * 60  # ten years: later dates overflow a datetime


class ScheduleError(ServiceError):
    """Bad schedule settings; the message is safe to show."""


def get_schedule(session: Session) -> RoundSchedule:
    """The schedule row (created, disabled, on first use). Flushes."""
    row = session.scalar(select(RoundSchedule).order_by(RoundSchedule.id).limit(1))
    if row is None:
        row = RoundSchedule(enabled=False, min_new_annotations=None, every_minutes=None, config={})
        session.add(row)
        session.flush()
    return row


def update_schedule(
    session: Session,
    *,
    enabled: bool | None = None,
    min_new_annotations: int | None = None,
    every_minutes: float | None = None,
    config: dict[str, Any] | RoundConfig | None = None,
) -> RoundSchedule:
    """Change the given settings (None = keep). 0 switches a trigger off. Flushes; the caller commits."""
    row = get_schedule(session)
    if min_new_annotations is not None:
        if not 0 <= min_new_annotations <= MAX_NEW_ANNOTATIONS:
            raise ScheduleError(f"min_new_annotations must be 0..{MAX_NEW_ANNOTATIONS} (0 = no annotation trigger)")
        row.min_new_annotations = min_new_annotations or None
    if every_minutes is not None:
        if not 0 <= every_minutes <= MAX_EVERY_MINUTES:  # also refuses NaN
            raise ScheduleError(f"every_minutes must be 0..{MAX_EVERY_MINUTES} (0 = no time trigger)")
        row.every_minutes = every_minutes or None
    if config is not None:
        try:
            row.config = as_round_config(config).model_dump(mode="json")
        except RoundError as exc:
            raise ScheduleError(f"round config: {exc}") from None
    if enabled is not None:
        if enabled and not row.min_new_annotations and not row.every_minutes:
            raise ScheduleError("set a trigger first: min_new_annotations and/or every_minutes")
        if enabled and not row.enabled:
            # Counting starts now: annotations and time before enabling do not fire a round at once.
            row.last_annotation_id = _max_human_annotation_id(session)
            row.last_fired_at = utcnow()
        row.enabled = enabled
    session.flush()
    return row


def _max_human_annotation_id(session: Session) -> int:
    return session.scalar(select(func.max(Annotation.id)).where(Annotation.source == "human")) or 0


def new_human_annotations(session: Session, row: RoundSchedule) -> int:
    # Gold tasks' and rounds' verdict tasks' annotations are no preference data: they never make a round due.
    gold = select(Task.id).where(or_(Task.gold.is_(True), Task.verdict_round_id.is_not(None)))
    stmt = (
        select(func.count())
        .select_from(Annotation)
        .where(Annotation.source == "human", Annotation.deleted_at.is_(None), Annotation.task_id.not_in(gold))
    )
    if row.last_annotation_id is not None:
        stmt = stmt.where(Annotation.id > row.last_annotation_id)
    return session.scalar(stmt) or 0


def due_reason(session: Session, row: RoundSchedule, *, now: datetime | None = None) -> str | None:
    """Why a round is due now (None: not due)."""
    now = now or utcnow()
    if row.min_new_annotations:
        new = new_human_annotations(session, row)
        if new >= row.min_new_annotations:
            return f"{new} new human annotations (>= {row.min_new_annotations})"
    if row.every_minutes:
        since = row.last_fired_at or row.updated_at
        if since is None or now - since >= timedelta(minutes=row.every_minutes):
            return f"{row.every_minutes:g} minutes since the last round"
    return None


def schedule_to_dict(row: RoundSchedule, session: Session | None = None) -> dict[str, Any]:
    out = {
        "enabled": row.enabled,
        "min_new_annotations": row.min_new_annotations or 0,
        "every_minutes": row.every_minutes or 0,
        "config": row.config,
        "last_fired_at": row.last_fired_at.isoformat() if row.last_fired_at else None,
        "last_annotation_id": row.last_annotation_id,
    }
    if session is not None:
        out["new_human_annotations"] = new_human_annotations(session, row)
    return out


@periodic_hook
def check_round_schedule(session: Session, settings: Settings) -> int | None:
    """Start a round if the schedule is due; the new job's id, or None. Called by the worker on every poll."""
    row = session.scalar(select(RoundSchedule).where(RoundSchedule.enabled.is_(True)).limit(1))
    if row is None or active_round(session) is not None:
        return None
    now = utcnow()
    reason = due_reason(session, row, now=now)
    if reason is None:
        return None
    baseline = _max_human_annotation_id(session)
    config = parse_round_config(row.config)
    if (
        current_policy(session) is None
        or too_little_data(preference_pairs(session, config=config), config)
        or untrusted_ai_labels(session, config)
    ):
        row.last_fired_at, row.last_annotation_id = now, baseline  # wait for the next trigger
        return None
    try:
        job = start_round(session, config=config.model_copy(update={"note": f"scheduled: {reason}"}))
    except RoundError:
        return None  # another worker started one meanwhile
    row.last_fired_at, row.last_annotation_id = now, baseline
    session.flush()
    return job.id
