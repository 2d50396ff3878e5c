"""The live job page in a real browser (Debian chromium): plots drawn by the vendored Chart.js from job_metrics,
the htmx block polling every 2 s and stopping once the job is finished."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from app.jobs import queue
from app.models import Job, JobMetric, utcnow
from app.services.jobs import enqueue_job
from tests.app.test_jobs_worker import rlhf_command, wait_for

CHROMIUM = Path("/usr/bin/chromium")  # Debian's chromium; never `playwright install`


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(settings, tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "RLHF_DATA_DIR": str(settings.data_dir),
        "RLHF_DATABASE_URL": settings.sqlalchemy_url,
        "RLHF_SECRET_KEY": "test-secret-key",
        "RLHF_OFFLINE_ASSETS": "1",
    }
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [*rlhf_command(), "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"

    def up():
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None  # died: stop waiting, the assert below says so

    wait_for(up, timeout=60, interval=0.2, what="the server")
    assert proc.poll() is None, (tmp_path / "server.log").read_text()
    yield base
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def test_job_page_plots_metrics_and_stops_polling_when_done(db, make_user, server):
    from playwright.sync_api import sync_playwright

    admin = make_user("admin")
    job = enqueue_job(db, kind="train", config={})
    db.commit()
    queue.claim_next(db, worker_id="w1")
    db.commit()
    for step in (1, 2, 3):
        db.add(JobMetric(job_id=job.id, stage="reward", step=step, values={"loss": 1 / step, "accuracy": step / 4}))
    db.commit()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(f"{server}/login")
        page.fill("input[name=username]", admin.username)
        page.fill("input[name=password]", "password123")
        page.click("button[type=submit]")
        page.goto(f"{server}/admin/jobs/{job.id}")
        page.wait_for_function("document.querySelectorAll('#job-plots canvas').length === 2", timeout=10_000)
        points = "(label) => Chart.getChart(document.querySelector(`canvas[aria-label='${label}']`)).data.datasets[0].data.length"
        assert page.evaluate(points, "reward · loss") == 3

        # new points and the end of the job reach the open page without a reload
        db.add(JobMetric(job_id=job.id, stage="reward", step=4, values={"loss": 0.2, "accuracy": 1.0}))
        row = db.get(Job, job.id)
        row.status, row.finished_at, row.result = "succeeded", utcnow(), {"model_version_id": 7}
        db.commit()
        page.wait_for_selector("#job-live[data-status=succeeded]", timeout=10_000)
        page.wait_for_function(f"({points})('reward · accuracy') === 4", timeout=10_000)
        assert page.get_attribute("#job-live", "hx-trigger") is None  # polling stopped
        assert "model_version_id" in page.inner_text("#job-live")
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        time.sleep(2.5)  # longer than both polling intervals (2 s)
        assert not [u for u in requests if f"/admin/jobs/{job.id}" in u], requests
        browser.close()
