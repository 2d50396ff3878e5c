"""What the annotate page shows an annotator, gathered in one call: the task leased to them (or, when none is left,
the job still making tasks) with the guidelines in force for it, their progress, and their recent answers with
those they may still undo."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.models import User
from app.services.annotation_history import HistoryEntry, my_history
from app.services.annotations import Progress, my_progress
from app.services.assignment import Offer, aware, next_task
from app.services.gold import QualificationFailed, QualificationReport, qualification_report
from app.services.guidelines import ShownGuidelines, show_to_annotator
from app.services.world_build import PendingWork, pending_work


@dataclass
class AnnotatorHistory:
    progress: Progress
    recent: list[HistoryEntry]
    undoable: set[int]  # ids of the recent answers still within the undo window


@dataclass
class Workspace:
    offer: Offer | None
    pending: PendingWork | None  # what is still making tasks, when no task is left (else None)
    history: AnnotatorHistory
    guidelines: ShownGuidelines | None  # for the offered task, when there are any
    refused: str | None = None  # why no task is given (a failed qualification), else None
    qualification: QualificationReport | None = None  # when qualification is required of this annotator


def annotator_history(session: Session, *, user_id: int, undo_minutes: float, limit: int) -> AnnotatorHistory:
    recent = my_history(session, user_id=user_id, limit=limit)
    undo_after = time.time() - undo_minutes * 60
    undoable = {a.id for a in recent if a.deleted_at is None and aware(a.created_at).timestamp() >= undo_after}
    return AnnotatorHistory(progress=my_progress(session, user_id=user_id), recent=recent, undoable=undoable)


def annotator_workspace(
    session: Session,
    *,
    user: User,
    lease_minutes: float,
    undo_minutes: float,
    recent: int,
    gold_rate: float = 0.0,
    qualification_threshold: float | None = None,
) -> Workspace:
    """Leases the next task (a reload keeps the same one), then reads the rest; records that the task's guidelines
    were shown. The caller commits."""
    refused = None
    try:
        offer = next_task(
            session,
            user=user,
            lease_minutes=lease_minutes,
            gold_rate=gold_rate,
            qualification_threshold=qualification_threshold,
        )
    except QualificationFailed as exc:
        session.rollback()  # the grade itself was committed before the refusal
        offer, refused = None, str(exc)
    qualifies = qualification_threshold is not None and user.role == "annotator"
    return Workspace(
        offer=offer,
        pending=pending_work(session) if offer is None and refused is None else None,
        history=annotator_history(session, user_id=user.id, undo_minutes=undo_minutes, limit=recent),
        refused=refused,
        qualification=(
            qualification_report(session, user_id=user.id, threshold=qualification_threshold) if qualifies else None
        ),
        guidelines=show_to_annotator(session, user_id=user.id, version_id=offer.guideline_version_id)
        if offer is not None
        else None,
    )
