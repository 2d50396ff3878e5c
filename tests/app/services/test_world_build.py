"""The world build as a job: what it records while it runs, what the dashboard and the terminal make of it, and
what annotators are told while tasks are on their way."""

from __future__ import annotations

import time

from app.services.world_build import (
    STEPS,
    StepTracker,
    build_view,
    pending_work,
    progress_line,
    queue_world_build,
)
from tests.factories import make_job


class FakeContext:
    def __init__(self):
        self.reports = []

    def report(self, done, total, message, result):
        self.reports.append((done, total, message, [dict(s) for s in result["steps"]]))


def test_tracker_records_each_step_with_counts_and_writes_step_changes_at_once(monkeypatch):
    from app.services import world_build

    monkeypatch.setattr(world_build, "WRITE_EVERY_S", 0.0)
    ctx = FakeContext()
    tracker = StepTracker(ctx)
    tracker("data", 0, 1)
    tracker("data", 1, 1)
    tracker("tokenizer", 0, 1)
    tracker("tokenizer", 1, 1)
    tracker("pretrain", 0, 1)
    tracker("pretrain", 10, 200)
    done, total, message, steps = ctx.reports[-1]
    assert total == len(STEPS) and [s["state"] for s in steps] == ["done", "done", "running", "waiting", "waiting"]
    assert steps[2]["step"] == 10 and steps[2]["total"] == 200 and message == "pretraining: step 10/200"
    assert 2.0 <= done < 2.1  # two steps done, 5% of the third
    monkeypatch.setattr(world_build, "WRITE_EVERY_S", 3600.0)
    written = len(ctx.reports)
    tracker("pretrain", 11, 200)  # soon after the last write, same step: not written
    assert len(ctx.reports) == written
    tracker("pretrain", 200, 200)  # a step ending: written at once
    assert len(ctx.reports) == written + 1 and ctx.reports[-1][3][2]["state"] == "done"


def test_view_estimates_the_running_step_from_its_own_pace(db):
    job = make_job(db, kind="world", status="running")
    now = time.time()
    job.result = {
        "steps": [
            dict(name="data", state="done", step=1, total=1, started_at=now - 100, finished_at=now - 99),
            dict(name="tokenizer", state="done", step=1, total=1, started_at=now - 99, finished_at=now - 90),
            # 40 steps in the 20 s since step 10: 0.5 s a step, 150 steps to go
            {
                "name": "pretrain",
                "state": "running",
                "step": 50,
                "total": 200,
                "started_at": now - 90,
                "finished_at": None,
                "paced_from": [10, now - 20],
            },
            {"name": "sft", "state": "waiting", "step": 0, "total": 0, "started_at": None, "finished_at": None},
            {"name": "register", "state": "waiting", "step": 0, "total": 0, "started_at": None, "finished_at": None},
        ]
    }
    job.progress_done, job.progress_total = 2.25, 5
    db.commit()
    view = build_view(job, now=now)
    assert view.active and view.percent == 45 and view.current.name == "pretrain"
    assert abs(view.current.eta_s - 75) < 1 and view.steps[1].elapsed_s == 9
    line = progress_line(view)
    assert f"job {job.id}" in line and "3/5 pretraining: step 50/200" in line and "about 75 s left" in line


def test_queue_world_build_returns_the_active_build_of_that_size(db, tmp_path):
    first = queue_world_build(db, size="tiny", seed=0, world_dir=tmp_path)
    again = queue_world_build(db, size="tiny", seed=0, world_dir=tmp_path)
    other = queue_world_build(db, size="small", seed=0, world_dir=tmp_path)
    assert first.id == again.id != other.id and first.kind == "world"


def test_pending_work_names_the_running_job_with_its_share_done(db):
    assert pending_work(db) is None
    make_job(db, kind="generate", status="succeeded")
    make_job(db, kind="train")  # queued, but makes no tasks
    assert pending_work(db) is None
    queued = make_job(db, kind="generate")
    work = pending_work(db)
    assert (work.job_id, work.status, work.percent) == (queued.id, "queued", None)
    queued.status, queued.progress_done, queued.progress_total = "running", 2.0, 5.0
    db.commit()
    later = make_job(db, kind="world")
    work = pending_work(db)
    assert (work.job_id, work.kind, work.percent) == (queued.id, "generate", 40) and later.id > queued.id
