"""What the admin dashboard shows, in one call: the counts, the current models, the latest jobs and the world
build (while the first start builds it, and its summary after)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app.models import Job, ModelVersion
from app.services.jobs import list_jobs
from app.services.models_registry import current_model
from app.services.stats import counts
from app.services.world_build import WorldBuildView, world_build_view

LATEST_JOBS = 8


@dataclass
class Dashboard:
    counts: dict[str, Any]
    policy: ModelVersion | None
    reward: ModelVersion | None
    jobs: list[Job]
    build: WorldBuildView | None


def admin_dashboard(session: Session) -> Dashboard:
    return Dashboard(
        counts=counts(session),
        policy=current_model(session, kind="policy"),
        reward=current_model(session, kind="reward"),
        jobs=list_jobs(session, limit=LATEST_JOBS),
        build=world_build_view(session),
    )
