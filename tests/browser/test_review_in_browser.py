"""The review pages in a real browser (Debian chromium) with JavaScript off and the keyboard alone: from the queue
to a ranking task, its ranks and note typed, the final label recorded (Post/Redirect/Get back to the queue)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.models import Adjudication
from tests.factories import annotate_ranking, make_generation, make_prompt, make_task

pytestmark = pytest.mark.browser


def _tab_to(page, selector: str) -> None:
    """Press Tab until the focused element matches `selector` (the keyboard's way to a control)."""
    for _ in range(80):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement && document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


def test_a_reviewer_records_a_ranking_with_the_keyboard_and_no_js(db, make_user, server, browser):
    alice, bob, reviewer = make_user(), make_user(), make_user("reviewer")
    prompt = make_prompt(db, "Order these.")
    gens = [make_generation(db, prompt, t, seed=i) for i, t in enumerate(("one", "two", "three"))]
    task = make_task(db, prompt, gens, kind="ranking", overlap=2)
    annotate_ranking(db, task, alice, ranking=gens)
    annotate_ranking(db, task, bob, ranking=gens[::-1])
    db.commit()
    task_id, ids = task.id, [g.id for g in gens]
    db.rollback()
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(f"{server}/login")
    _tab_to(page, "input[name=username]")
    page.keyboard.type(reviewer.username)
    _tab_to(page, "input[name=password]")
    page.keyboard.type("password123")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server}/review")
    _tab_to(page, f"a[href='/review/tasks/{task_id}']")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server}/review/tasks/{task_id}")
    for rank in ("3", "1", "2"):  # the responses in canonical order: one is last, two first, three second
        _tab_to(page, "input[name=rank]:focus")
        page.keyboard.press("ControlOrMeta+a")
        page.keyboard.type(rank)
    _tab_to(page, "textarea[name=note]")
    page.keyboard.type("two answers it")
    _tab_to(page, "button.primary")
    page.keyboard.press("Enter")
    page.wait_for_selector(f"text=task {task_id} adjudicated")
    assert page.url.startswith(f"{server}/review?notice=")
    assert db.scalar(select(Adjudication.ranking).where(Adjudication.task_id == task_id)) == [ids[1], ids[2], ids[0]]
    context.close()
