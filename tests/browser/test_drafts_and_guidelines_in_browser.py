"""Long work in a real browser (Debian chromium through Playwright) against `rlhf serve`: the guidelines unfold on
the first visit and stay folded after; a critique and a rewrite survive a reload (drafts in localStorage); the lease
is renewed while the annotator types; the draft is gone once the annotation is saved."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.models import Annotation
from app.services.guidelines import save_guidelines
from tests.browser.conftest import ARTIFACTS
from tests.factories import make_tasks, task_line, wait_in_page

pytestmark = pytest.mark.browser


@pytest.fixture
def server_env(server_env):
    """A 6 s lease: the page renews it every 1.5 s of activity, so the test sees a renewal at once."""
    return {**server_env, "RLHF_LEASE_MINUTES": "0.1"}


def test_drafts_survive_a_reload_the_lease_is_renewed_and_the_guidelines_unfold_once(db, make_user, server, browser):
    (task_id,) = make_tasks(db, task_line(overlap=1))
    save_guidelines(db, body="# How to judge\n\nPrefer the **correct** answer.", job_id=None, author_id=None)
    db.commit()
    user = make_user()
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.goto(f"{server}/login?next=/annotate")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", "password123")
    page.click("button[type=submit]")
    page.wait_for_url(f"{server}/annotate")

    # First visit: the guidelines are unfolded, rendered from markdown.
    assert page.get_attribute("[data-testid=guidelines]", "open") is not None
    assert page.inner_text("[data-testid=guidelines] .md strong") == "correct"
    key = page.get_attribute("#annotate-form", "data-draft-key")
    assert key.endswith(f":{task_id}")

    # Type a critique and a rewrite; each keystroke is activity, so the lease line comes back renewed.
    page.fill("textarea[name=critique]", "The second answer forgets the unit.")
    page.click(".rewrite summary")
    page.click("textarea[name=rewrite]")
    page.keyboard.type("Forty-two metres.", delay=120)  # over 2 s of typing: past one renewal period
    wait_in_page(page, "document.getElementById('lease').textContent.includes('renewed')")
    wait_in_page(page, f"localStorage.getItem({key!r}) && localStorage.getItem({key!r}).includes('metres')")
    page.screenshot(path=str(ARTIFACTS / "annotate-draft.png"), full_page=True)

    # Reload: the same task, the text back in its boxes, and the guidelines folded (seen once).
    page.reload()
    page.wait_for_selector("#annotate-form")
    assert page.input_value("textarea[name=critique]") == "The second answer forgets the unit."
    assert page.input_value("textarea[name=rewrite]") == "Forty-two metres."
    assert (
        page.is_visible("[data-testid=draft-note]") and page.get_attribute("[data-testid=guidelines]", "open") is None
    )

    # Saved: the draft is dropped.
    page.check("input[name=pick][value=tie]")
    page.click("[data-testid=submit]")
    page.wait_for_selector("[data-testid=no-task]")
    wait_in_page(page, f"localStorage.getItem({key!r}) === null")
    db.expire_all()
    annotation = db.scalars(select(Annotation)).one()
    db.rollback()
    assert (annotation.critique, annotation.rewrite) == ("The second answer forgets the unit.", "Forty-two metres.")
    assert annotation.guideline_version_id is not None
    assert not errors, errors
