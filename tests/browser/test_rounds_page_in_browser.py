"""The Rounds page in a real browser (Debian chromium): choosing the algorithm swaps its settings in place (htmx,
no reload), the advanced ones stay folded, the form starts a numbered round; a held-back round is promoted by hand
from its page."""

from __future__ import annotations

import pytest

from app.models import Job, ModelVersion
from app.services.rounds import RoundConfig, promotion_verdict
from tests.factories import labelled_world

pytestmark = pytest.mark.browser


def _login(browser, server, admin):
    page = browser.new_page()
    errors = []
    # the page's own requests that fail (the browser's favicon probe is no request of the page's)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server}/login")
    page.fill("input[name=username]", admin.username)
    page.fill("input[name=password]", "password123")
    page.click("button[type=submit]")
    return page, errors


def test_the_algorithm_swaps_its_settings_in_place_and_the_form_starts_a_round(db, make_user, server, browser):
    labelled_world(db, train=12, eval=2)
    admin = make_user("admin")
    db.commit()
    page, errors = _login(browser, server, admin)
    page.goto(f"{server}/admin/rounds?algo=ppo")
    assert page.is_visible("input[name='ppo.kl_coef']") and not page.is_visible("input[name='ppo.cliprange']")
    page.evaluate("window.sameDocument = true")
    page.click("a[href='/admin/rounds?algo=dpo#round-start']")
    page.wait_for_selector("input[name='dpo.beta']", timeout=10_000)
    assert page.evaluate("window.sameDocument") is True  # swapped by htmx, not a reload
    assert page.url.endswith("/admin/rounds?algo=dpo")
    assert page.locator("input[name='ppo.kl_coef']").count() == 0
    assert not page.is_visible("input[name='dpo.max_length']")  # advanced: folded
    page.click("#settings-dpo summary")
    assert page.is_visible("input[name='dpo.max_length']")

    page.fill("input[name='min_pairs']", "12")
    page.click("button.primary")
    page.wait_for_selector("h1:has-text('Round 1')", timeout=10_000)
    assert page.locator("input[name=algo]").count() == 0  # now on the round's own page
    job = db.query(Job).one()
    assert job.config["algo"] == "dpo" and job.round_number == 1
    assert errors == []


def test_a_held_back_round_is_promoted_by_hand_from_its_page(db, make_user, server, browser):
    sft, _ = labelled_world(db, train=2, eval=1)
    job = Job(kind="round", status="succeeded", config={"algo": "ppo"}, round_number=1, result={})
    db.add(job)
    db.flush()
    policy = ModelVersion(name="policy-r1", kind="policy", stage="rlhf", path="/x", parent_id=sft.id, metrics={})
    db.add(policy)
    db.flush()
    evaluation = {"summary": {"rm_win_rate": 0.5, "rm_win_rate_se": 0.0, "kl_to_start": 0.001}, "checks": []}
    job.result = {"policy_id": policy.id, "promotion": promotion_verdict(evaluation, RoundConfig())}
    admin = make_user("admin")
    db.commit()
    job_id, policy_id = job.id, policy.id

    page, errors = _login(browser, server, admin)
    page.goto(f"{server}/admin/rounds/{job_id}")
    assert "Not promoted" in page.inner_text("#round-promotion")
    assert "changed almost nothing" in page.inner_text("#round-promotion")
    page.click("#round-promotion button[type=submit]")
    page.wait_for_selector("#round-promotion :text('Promoted by hand')", timeout=10_000)
    assert page.url.endswith(f"/admin/rounds/{job_id}")  # Post/Redirect/Get
    db.expire_all()
    assert db.get(ModelVersion, policy_id).is_current
    assert errors == []
