"""The live job page in a real browser (Debian chromium): plots drawn by the vendored Chart.js from job_metrics,
the htmx block polling every 2 s and stopping once the job is finished."""

from __future__ import annotations

import time

import pytest

from app.jobs import queue
from app.models import Job, JobMetric, utcnow
from app.services.jobs import enqueue_job
from tests.factories import wait_in_page

pytestmark = pytest.mark.browser


def test_job_page_plots_metrics_and_stops_polling_when_done(db, make_user, server, browser):
    admin = make_user("admin")
    job = enqueue_job(db, kind="train", config={})
    db.commit()
    queue.claim_next(db, worker_id="w1")
    db.commit()
    for step in (1, 2, 3):
        db.add(JobMetric(job_id=job.id, stage="reward", step=step, values={"loss": 1 / step, "accuracy": step / 4}))
    db.commit()

    page = browser.new_page()
    page.goto(f"{server}/login")
    page.fill("input[name=username]", admin.username)
    page.fill("input[name=password]", "password123")
    page.click("button[type=submit]")
    page.goto(f"{server}/admin/jobs/{job.id}")
    wait_in_page(page, "document.querySelectorAll('#job-plots canvas').length === 2", timeout=10)
    points = (
        "(label) => Chart.getChart(document.querySelector(`canvas[aria-label='${label}']`))"
        ".data.datasets[0].data.length"
    )
    assert page.evaluate(points, "reward · loss") == 3

    # new points and the end of the job reach the open page without a reload
    db.add(JobMetric(job_id=job.id, stage="reward", step=4, values={"loss": 0.2, "accuracy": 1.0}))
    row = db.get(Job, job.id)
    row.status, row.finished_at, row.result = "succeeded", utcnow(), {"model_version_id": 7}
    db.commit()
    page.wait_for_selector("#job-live[data-status=succeeded]", timeout=10_000)
    wait_in_page(page, f"({points})('reward · accuracy') === 4", timeout=10)
    assert page.get_attribute("#job-live", "hx-trigger") is None  # polling stopped
    assert "model_version_id" in page.inner_text("#job-live")
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    time.sleep(2.5)  # longer than both polling intervals (2 s)
    assert not [u for u in requests if f"/admin/jobs/{job.id}" in u], requests
