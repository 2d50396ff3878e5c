"""With the CDN unreachable (every request to it aborted), the default pages fall back to the vendored copies of
htmx, SortableJS and Chart.js: they still refresh (htmx polling), drag (the ranking list) and draw (job plots,
stats)."""

from __future__ import annotations

import re

import pytest

from app.jobs import queue
from app.models import Job, JobMetric
from app.services.jobs import enqueue_job
from tests.factories import (
    annotate_pairwise,
    make_annotator,
    make_generation,
    make_prompt,
    make_task,
    make_tasks,
    task_line,
    wait_in_page,
)

pytestmark = pytest.mark.browser
CDN = re.compile(r"^https://unpkg\.com/")


def _login(page, base, user, then):
    page.goto(f"{base}/login?next={then}")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", "password123")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{then}")


def test_pages_refresh_drag_and_draw_with_the_cdn_blocked(db, make_user, cdn_server, browser):
    make_tasks(db, task_line("ranking", n=3, priority=5))
    someone = make_annotator(db, "someone")  # an annotation today, for the stats page's throughput chart
    prompt = make_prompt(db, "Say hi.")
    task = make_task(db, prompt, [make_generation(db, prompt, "hi"), make_generation(db, prompt, "yo")])
    annotate_pairwise(db, task, someone, chosen=task.positions[0].generation)
    job = enqueue_job(db, kind="train", config={})
    db.commit()
    queue.claim_next(db, worker_id="w1")
    db.add_all(JobMetric(job_id=job.id, stage="sft", step=s, values={"loss": 1 / s}) for s in (1, 2, 3))
    db.commit()
    admin, annotator = make_user("admin"), make_user()

    blocked: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.route(CDN, lambda route: (blocked.append(route.request.url), route.abort()))
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # refreshes: the job page's live block polls (htmx) and shows new progress without a reload; draws: its plots
    _login(page, cdn_server, admin, f"/admin/jobs/{job.id}")
    wait_in_page(page, "document.querySelectorAll('#job-plots canvas').length >= 1", timeout=10)
    assert page.evaluate("Chart.getChart(document.querySelector('#job-plots canvas')).data.datasets[0].data.length")
    page.evaluate("window.__sameDocument = true")
    row = db.get(Job, job.id)
    row.progress_done, row.progress_total, row.progress_message = 7, 10, "half-way-marker"
    db.commit()
    page.wait_for_selector("text=half-way-marker", timeout=10_000)
    assert page.evaluate("window.__sameDocument") is True  # swapped in by htmx, not reloaded
    page.goto(f"{cdn_server}/admin/stats")
    wait_in_page(page, "window.Chart && Chart.getChart('throughput-chart')", timeout=10)
    assert page.evaluate("typeof htmx") == "object"

    # drags: the ranking list, with the vendored SortableJS
    context.clear_cookies()
    _login(page, cdn_server, annotator, "/annotate")
    page.wait_for_selector("#annotate-form[data-kind=ranking]")
    assert page.evaluate("typeof Sortable") == "function" and page.evaluate("typeof htmx") == "object"
    before = page.eval_on_selector_all("#rank-list li", "els => els.map(e => +e.dataset.gid)")
    page.drag_and_drop("#rank-list li:nth-child(3)", "#rank-list li:nth-child(1)")
    after = page.eval_on_selector_all("#rank-list li", "els => els.map(e => +e.dataset.gid)")
    assert after[0] == before[2] and sorted(after) == sorted(before)

    assert {u.split("@")[0] for u in blocked} >= {
        "https://unpkg.com/htmx.org",
        "https://unpkg.com/sortablejs",
        "https://unpkg.com/chart.js",
    }
    assert errors == []
    context.close()
