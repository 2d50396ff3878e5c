"""The annotate page in a real browser (Debian chromium through Playwright) against `rlhf serve`:
pairwise by keyboard, ranking by drag and keys, rating with critique and rewrite, undo; a screenshot of each."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.models import Annotation
from tests.browser.conftest import ARTIFACTS
from tests.factories import make_tasks, task_line, wait_in_page

pytestmark = pytest.mark.browser


def _annotations(db) -> list[Annotation]:
    db.expire_all()
    rows = list(db.scalars(select(Annotation).order_by(Annotation.id)))
    db.expunge_all()  # detached: reading them later must not open a new transaction
    db.rollback()  # never hold SQLite's write lock while the server works
    return rows


def _login(page, base, user):
    page.goto(f"{base}/login?next=/annotate")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", "password123")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/annotate")


def _shown_ids(page) -> list[int]:
    return [int(x) for x in page.eval_on_selector_all(".response", "els => els.map(e => e.dataset.gid)")]


def test_annotate_in_chromium_keyboard_drag_rating_undo(db, make_user, server, browser):
    make_tasks(
        db,
        task_line("pairwise", priority=3, prompt="Which is **kinder**? <script>window.pwned=1</script>"),
        task_line("ranking", n=3, priority=2),
        task_line("rating", n=2, priority=1),
    )
    user = make_user()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("requestfailed", lambda req: errors.append(f"failed {req.url}"))
    # the Content-Security-Policy refuses nothing the page needs (a refusal is logged to the console)
    page.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
    _login(page, server, user)

    # -- pairwise with the keyboard: "?" help, "2" picks B, Enter submits through htmx (no page load)
    page.wait_for_selector("#annotate-form[data-kind=pairwise]")
    assert page.evaluate("typeof htmx") == "object" and page.evaluate("window.pwned") is None
    assert "<script>" in page.inner_text(".prompt")  # shown as text
    boxes = page.eval_on_selector_all(".response", "els => els.map(e => e.getBoundingClientRect().x)")
    assert boxes[0] != boxes[1]  # side by side on a wide screen
    page.keyboard.press("?")
    assert page.is_visible("#shortcuts")
    page.keyboard.press("Escape")
    shown = _shown_ids(page)
    page.evaluate("window.__sameDocument = true")
    page.screenshot(path=str(ARTIFACTS / "annotate-pairwise.png"), full_page=True)
    page.keyboard.press("2")
    assert page.is_checked(f"input[name=pick][value='{shown[1]}']")
    page.keyboard.press("Enter")
    page.wait_for_selector("#annotate-form[data-kind=ranking]")
    assert page.evaluate("window.__sameDocument") is True  # swapped in place, not reloaded
    first = _annotations(db)[0]
    assert (first.choice, first.chosen_id, first.strength, first.positions) == ("chosen", shown[1], 2, shown)
    assert first.time_spent_ms and first.time_spent_ms > 0

    # -- ranking: drag the last item to the top, then move the (new) last one up with the keyboard
    items = page.eval_on_selector_all("#rank-list li", "els => els.map(e => +e.dataset.gid)")
    page.drag_and_drop("#rank-list li:nth-child(3)", "#rank-list li:nth-child(1)")
    wait_in_page(page, f"document.querySelector('#rank-list li').dataset.gid == {items[2]}")
    after_drag = page.eval_on_selector_all("#rank-list li", "els => els.map(e => +e.dataset.gid)")
    page.focus("#rank-list li:nth-child(3)")
    page.keyboard.press("ArrowUp")
    expected = [after_drag[0], after_drag[2], after_drag[1]]
    assert page.eval_on_selector_all("#rank-list li", "els => els.map(e => +e.dataset.gid)") == expected
    page.screenshot(path=str(ARTIFACTS / "annotate-ranking.png"), full_page=True)
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#annotate-form[data-kind=rating]")
    assert _annotations(db)[1].ranking == expected

    # -- rating with a critique per response and a rewrite; stacked on a narrow screen
    page.set_viewport_size({"width": 420, "height": 900})
    boxes = page.eval_on_selector_all(".response", "els => els.map(e => e.getBoundingClientRect().x)")
    assert boxes[0] == boxes[1]
    ids = _shown_ids(page)
    page.check(f"input[name=rating_{ids[0]}][value=good]")
    page.check(f"input[name=rating_{ids[1]}][value=bad]")
    page.click(f".response[data-gid='{ids[1]}'] details.critique summary")
    page.fill(f"textarea[name=critique_{ids[1]}]", "Gets the date wrong.")
    page.click("details.rewrite summary")
    page.fill("textarea[name=rewrite]", "The ideal answer, written by hand.")
    page.screenshot(path=str(ARTIFACTS / "annotate-rating-narrow.png"), full_page=True)
    page.click("[data-testid=submit]")
    page.wait_for_selector("[data-testid=no-task]")
    rating = _annotations(db)[2]
    assert rating.ratings == {str(ids[0]): "good", str(ids[1]): "bad"}
    assert rating.critiques == {str(ids[1]): "Gets the date wrong."}
    assert rating.rewrite == "The ideal answer, written by hand."
    assert page.inner_text("[data-testid=progress-total]") == "3"

    # -- undo the last one: kept with a deletion time, and the task is back on screen
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.screenshot(path=str(ARTIFACTS / "annotate-done.png"), full_page=True)
    page.click(f"[data-testid=undo-{rating.id}]")
    page.wait_for_selector("#annotate-form[data-kind=rating]")
    assert _annotations(db)[2].deleted_at is not None
    assert page.inner_text("[data-testid=progress-total]") == "2"
    page.screenshot(path=str(ARTIFACTS / "annotate-after-undo.png"), full_page=True)
    page.goto(f"{server}/annotate/progress")
    page.screenshot(path=str(ARTIFACTS / "annotate-progress.png"), full_page=True)
    assert not errors, errors


def test_skip_with_the_s_key(db, make_user, server, browser):
    (task_id,) = make_tasks(db, task_line())
    user = make_user()
    page = browser.new_page()
    _login(page, server, user)
    page.wait_for_selector("#annotate-form")
    page.keyboard.press("s")
    page.wait_for_selector("[data-testid=no-task]")
    from app.models import Assignment

    reason = db.scalars(select(Assignment.skip_reason).where(Assignment.task_id == task_id)).one()
    db.rollback()
    assert reason == "I can't judge this topic"


def test_one_key_per_choice_in_every_kind_and_a_past_answer_reviewed(db, make_user, server, browser):
    make_tasks(
        db,
        task_line("pairwise", priority=3, prompt="Pairwise prompt by keys"),
        task_line("ranking", n=3, priority=2),
        task_line("rating", n=3, priority=1, prompt="Rating prompt by keys"),
    )
    user = make_user()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _login(page, server, user)

    # pairwise: B better (2), much (M), and A good, B bad (G, N): five keys with Enter
    page.wait_for_selector("#annotate-form[data-kind=pairwise]")
    shown = _shown_ids(page)
    for key in ("2", "m", "g", "n", "Enter"):
        page.keyboard.press(key)
    page.wait_for_selector("#annotate-form[data-kind=ranking]")
    pairwise = _annotations(db)[0]
    assert (pairwise.chosen_id, pairwise.strength) == (shown[1], 3)
    assert pairwise.ratings == {str(shown[0]): "good", str(shown[1]): "bad"}

    # ranking: R reaches the list, number keys place the focused item
    items = page.eval_on_selector_all("#rank-list li", "els => els.map(e => +e.dataset.gid)")
    for key in ("r", "3", "2"):  # the first item to rank 3, then (still focused) to rank 2
        page.keyboard.press(key)
    expected = [items[1], items[0], items[2]]
    assert page.eval_on_selector_all("#rank-list li", "els => els.map(e => +e.dataset.gid)") == expected
    page.keyboard.press("Enter")
    page.wait_for_selector("#annotate-form[data-kind=rating]")
    assert _annotations(db)[1].ranking == expected

    # rating: G / N rate the outlined response and move on: three keys for three responses
    ids = _shown_ids(page)
    assert page.get_attribute(".response:nth-child(1)", "class").count("rating-cursor") == 1
    for key in ("g", "n", "g", "Enter"):
        page.keyboard.press(key)
    page.wait_for_selector("[data-testid=no-task]")
    assert _annotations(db)[2].ratings == {str(ids[0]): "good", str(ids[1]): "bad", str(ids[2]): "good"}

    # history says what was chosen in the labels shown, with the prompt; a past answer opens read-only
    history = page.inner_text(".recent")
    assert "B better (much); A good, B bad" in history and "Pairwise prompt by keys" in history
    page.click(f"[data-testid=review-{pairwise.id}]")
    page.wait_for_selector("[data-testid=review]")
    assert page.inner_text("[data-testid=review-summary]") == "B better (much); A good, B bad"
    assert "chosen" in page.inner_text("[data-testid=review-response-B]")
    assert page.locator("[data-testid=review] input, [data-testid=review] textarea").count() == 0
    page.screenshot(path=str(ARTIFACTS / "annotate-review.png"), full_page=True)
    assert not errors, errors
