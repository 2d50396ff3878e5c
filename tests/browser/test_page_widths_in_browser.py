"""No page is wider than the window, on a desktop (1280 px) and a phone (390 px): every admin and annotator page,
with data in its tables, checked for document.scrollWidth <= window.innerWidth; a screenshot of each goes to
test-artifacts/. Also: /docs loads for a signed-in admin and offers "Authorize" for bearer tokens."""

from __future__ import annotations

import pytest

from app.models import Job, utcnow
from tests.browser.conftest import ARTIFACTS
from tests.factories import build_dataset, make_tasks, task_line

pytestmark = pytest.mark.browser

WIDTHS = (1280, 390)
ADMIN_PAGES = [
    "/admin",
    "/admin/users",
    "/admin/prompts",
    "/admin/tasks",
    "/admin/exports",
    "/admin/generate",
    "/admin/models",
    "/admin/stats",
    "/admin/rounds",
    "/admin/rounds/{round}",
    "/admin/jobs",
    "/admin/jobs/{round}",
]
OVERFLOW = "() => [document.documentElement.scrollWidth, window.innerWidth]"
# the outermost element that reaches past the window's right edge, to say what to fix
WIDEST = """() => {
  const out = [...document.body.querySelectorAll('*')]
    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1);
  const top = out.find(e => !out.includes(e.parentElement)) || out[0];
  if (!top) return '';
  return top.tagName.toLowerCase() + (top.className ? '.' + String(top.className).split(' ').join('.') : '');
}"""


def _login(page, base, user, then: str) -> None:
    page.goto(f"{base}/login?next={then}")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", "password123")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{then}")


def _widths(browser, base, user, paths: list[str], role: str) -> list[str]:
    too_wide = []
    for width in WIDTHS:
        page = browser.new_page(viewport={"width": width, "height": 900})
        _login(page, base, user, paths[0])
        for path in paths:
            page.goto(f"{base}{path}")
            page.wait_for_load_state("load")
            name = path.strip("/").replace("/", "-") or "home"
            page.screenshot(path=str(ARTIFACTS / f"width-{width}-{role}-{name}.png"), full_page=True)
            scroll, inner = page.evaluate(OVERFLOW)
            if scroll > inner:
                culprit = page.evaluate(WIDEST)
                too_wide.append(f"{path} at {width} px: {scroll} px wide ({culprit})")
        page.close()
    return too_wide


def test_no_page_is_wider_than_a_desktop_or_a_phone_and_docs_offer_authorize(db, make_user, server, browser):
    build_dataset(db)
    make_tasks(
        db,
        task_line("pairwise", prompt="A long prompt: " + "words that go on and on " * 20),
        task_line("ranking", n=3),
        task_line("rating", n=2),
    )
    long_error = "trainer rs failed (exit status 1):\n" + "x" * 400 + "\nIndexError: index out of range in self"
    round_job = Job(
        kind="round",
        status="failed",
        config={"algo": "rs", "note": "a round with a long error line"},
        result={},
        attempts=1,
        error=long_error,
        failed_stage="policy",
        error_summary="the rs step failed (exit status 1): index out of range in self (IndexError)",
        finished_at=utcnow(),
    )
    db.add(round_job)
    db.commit()
    admin, annotator = make_user("admin"), make_user("annotator")
    paths = [p.format(round=round_job.id) for p in ADMIN_PAGES]

    too_wide = _widths(browser, server, admin, paths, "admin")
    too_wide += _widths(browser, server, annotator, ["/annotate"], "annotator")
    assert not too_wide, too_wide

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    _login(page, server, admin, "/docs")
    page.wait_for_selector(".swagger-ui .auth-wrapper .authorize", timeout=20_000)
    page.click(".swagger-ui .auth-wrapper .authorize")
    assert page.is_visible("text=HTTPBearer")
