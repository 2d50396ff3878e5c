"""The admin dashboard's data in one call: counts, the current models, the latest jobs, the world build."""

from __future__ import annotations

from app.services.dashboard import LATEST_JOBS, admin_dashboard
from tests.factories import make_job, make_tasks, register_policy, task_line


def test_the_dashboard_gathers_counts_current_models_and_the_latest_jobs(db):
    empty = admin_dashboard(db)
    assert empty.policy is None and empty.reward is None and empty.jobs == [] and empty.build is None
    make_tasks(db, task_line(), task_line())
    policy = register_policy(db, "/models/sft")
    jobs = [make_job(db, kind="generate") for _ in range(LATEST_JOBS + 2)]
    db.commit()
    dashboard = admin_dashboard(db)
    assert dashboard.policy.id == policy.id and dashboard.reward is None
    assert len(dashboard.jobs) == LATEST_JOBS and {j.id for j in dashboard.jobs} <= {j.id for j in jobs}
    assert dashboard.counts != empty.counts
