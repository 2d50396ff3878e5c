"""The data manager in a real browser (Debian chromium): the search swaps the results block with htmx (no reload,
the URL follows), a selected row is retired through the plain form, and the page fits 1280 and 390 px wide."""

from __future__ import annotations

import pytest

from tests.browser.conftest import ARTIFACTS
from tests.factories import make_tasks, task_line

pytestmark = pytest.mark.browser


def test_data_page_searches_retires_and_fits(db, make_user, server, browser):
    admin = make_user("admin")
    ids = make_tasks(db, task_line(prompt="the cat question"), task_line(prompt="the dog question"))
    db.rollback()
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{server}/login")
    page.fill("input[name=username]", admin.username)
    page.fill("input[name=password]", "password123")
    page.click("button[type=submit]")
    page.goto(f"{server}/admin/data")
    page.evaluate("window.notReloaded = true")
    page.fill("input[name=q]", "cat")
    page.wait_for_selector("#data-results >> text=dog question", state="detached")
    assert page.evaluate("window.notReloaded") is True and "q=cat" in page.url
    page.check(f"input[name=ids][value='{ids[0]}']")
    page.click("button[value=retire]")
    page.wait_for_selector("text=1 task(s) retired")
    assert "retired" in page.inner_text("#data-results")
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 800})
        page.screenshot(path=str(ARTIFACTS / f"data-page-{width}.png"), full_page=True)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"the page is {overflow}px wider than the {width}px window"
