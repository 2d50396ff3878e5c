"""A round watched in chromium from queued to done: every refresh of the polled block answers 200, the console
stays clean, and the page ends showing the report and the snapshot without a reload, then stops polling."""

from __future__ import annotations

import time

import pytest

from app.services.rounds import start_round
from tests.browser.conftest import ARTIFACTS
from tests.factories import labelled_world, tiny_round_config

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# the round's status and stage as the page shows them
STATE = """() => {
  const live = document.querySelector('#round-live');
  const stage = live.querySelector('.job-progress span');
  return [live.dataset.status, live.querySelector('.job-status').innerText + (stage ? ' ' + stage.innerText : '')];
}"""
ROUND_S = 300  # a DPO round of the tiny LM takes seconds; a loaded 2-core machine gets this long


def test_round_page_follows_a_round_through_every_stage_to_its_report(
    db, make_user, server, worker, browser, tiny_lm_dir, tmp_path
):
    admin = make_user("admin")
    labelled_world(db, tiny_lm_dir, train=12, eval=2)
    config = tiny_round_config(
        algo="dpo",
        reward_likelihood=False,
        reward={"epochs": 1},
        eval_prompts=2,
        eval_max_new_tokens=4,
        report_samples=0,  # each sample set and the next tasks cost a trainer process: the fewest steps
        next_tasks={"prompts": 0},
    )
    job = start_round(db, config=config)
    db.commit()

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    failures: list[str] = []
    page.on("response", lambda r: r.status >= 400 and failures.append(f"{r.status} {r.url}"))
    page.on("console", lambda m: m.type == "error" and failures.append(f"console: {m.text} {m.location}"))
    page.on("pageerror", lambda e: failures.append(f"page error: {e}"))
    polls: list[int] = []
    page.on("response", lambda r: r.url.endswith(f"/admin/rounds/{job.id}") and polls.append(r.status))
    page.goto(f"{server}/login")
    page.fill("input[name=username]", admin.username)
    page.fill("input[name=password]", "password123")
    page.click("button[type=submit]")
    page.goto(f"{server}/admin/rounds/{job.id}")
    assert page.get_attribute("#round-live", "data-status") == "queued"

    worker()
    seen: list[str] = []
    deadline = time.monotonic() + ROUND_S
    while time.monotonic() < deadline and not failures:
        status, text = page.evaluate(STATE)
        if not seen or seen[-1] != text:
            seen.append(text)
        if status in ("succeeded", "failed", "cancelled"):
            break
        page.wait_for_timeout(250)
    page.screenshot(path=str(ARTIFACTS / "round-page-done.png"), full_page=True)
    assert not failures, failures
    worker_log = (tmp_path / "worker.log").read_text()
    assert page.get_attribute("#round-live", "data-status") == "succeeded", (seen, worker_log)

    live = page.inner_text("#round-live")
    assert "Evaluation on 2 eval prompts" in live and "Win-rate" in live  # the report
    assert "trl.jsonl" in live and "Download the snapshot" in live  # the snapshot, swapped in by the last poll
    assert page.get_attribute("#round-live", "hx-trigger") is None  # polling stopped
    assert len(polls) >= 3 and set(polls) == {200}, polls  # the first load, refreshes, all answered
    count = len(polls)
    page.wait_for_timeout(2500)  # longer than the polling interval
    assert len(polls) == count and not failures
