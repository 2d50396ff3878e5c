"""The annotate pages over plain HTTP: the no-JS path (POST + 303), htmx fragments, escaping, blindness."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from app.models import Annotation, Assignment, Generation, Task, TaskPosition
from tests.factories import make_tasks, task_line


def _field(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no {name} in the page"
    return match.group(1)


def _form(html: str, csrf: str, **fields) -> dict:
    return {
        "csrf_token": csrf,
        "task_id": _field(html, "task_id"),
        "idempotency_key": _field(html, "idempotency_key"),
        "rendered_at": _field(html, "rendered_at"),
        **fields,
    }


def _picks(html: str) -> list[str]:
    return re.findall(r'name="pick" value="(\d+)"', html)


def test_login_required(client):
    response = client.get("/annotate", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login")


def test_page_escapes_html_renders_markdown_and_shows_no_model_names(client, db, make_user, login):
    from app.models import ModelVersion

    (task_id,) = make_tasks(
        db,
        task_line(
            prompt="Why <script>alert(1)</script>?", responses=["**bold** and `x < y`", "```python\nprint('<b>')\n```"]
        ),
    )
    model = ModelVersion(name="secret-policy-v7", kind="policy", stage="sft", path="/m", metrics={})
    db.add(model)
    db.flush()
    for gen in db.scalars(
        select(Generation)
        .join(TaskPosition, TaskPosition.generation_id == Generation.id)
        .where(TaskPosition.task_id == task_id)
    ):
        gen.model_version_id = model.id
    db.commit()
    login(make_user())
    page = client.get("/annotate").text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<strong>bold</strong>" in page and "<code>x &lt; y</code>" in page
    assert 'class="language-python"' in page and "print('&lt;b&gt;')" in page
    assert "secret-policy-v7" not in page
    assert "/static/vendor/htmx/htmx.min.js" in page and "/static/vendor/sortablejs/Sortable.min.js" in page


def test_no_js_submit_redirects_303_and_next_task_follows(client, db, make_user, login):
    first, second = make_tasks(db, task_line(priority=1), task_line())
    csrf = login(make_user())
    page = client.get("/annotate").text
    assert _field(page, "task_id") == str(first)
    pick = _picks(page)[1]
    response = client.post(
        "/annotate/submit",
        data=_form(page, csrf, pick=pick, strength="3", critique="fine", flag="unsafe"),
        follow_redirects=False,
    )
    # back to /annotate, naming the task that is done with, so the page's script drops its draft
    assert response.status_code == 303 and response.headers["location"] == f"/annotate?done={first}"
    annotation = db.scalars(select(Annotation)).one()
    assert (annotation.choice, annotation.chosen_id, annotation.strength) == ("chosen", int(pick), 3)
    assert annotation.flags == ["unsafe"] and annotation.critique == "fine" and annotation.time_spent_ms is not None
    db.rollback()
    page = client.get(response.headers["location"]).text
    assert _field(page, "task_id") == str(second)
    assert re.search(rf'data-finished-draft="rlhf-draft:\w+:{first}"', page)
    assert 'data-testid="progress-today">1<' in page and 'data-testid="progress-remaining">1<' in page


def test_double_click_same_form_stores_one(client, db, make_user, login):
    make_tasks(db, task_line(overlap=2), task_line())
    csrf = login(make_user())
    page = client.get("/annotate").text
    data = _form(page, csrf, pick="tie")
    assert client.post("/annotate/submit", data=data, follow_redirects=False).status_code == 303
    assert client.post("/annotate/submit", data=data, follow_redirects=False).status_code == 303
    assert db.scalar(select(func.count()).select_from(Annotation)) == 1


def test_each_render_carries_a_fresh_key(client, db, make_user, login):
    make_tasks(db, task_line())
    login(make_user())
    first, second = client.get("/annotate").text, client.get("/annotate").text
    assert _field(first, "task_id") == _field(second, "task_id")
    assert _field(first, "idempotency_key") != _field(second, "idempotency_key")


def test_htmx_submit_returns_the_next_task_fragment(client, db, make_user, login):
    first, second = make_tasks(db, task_line(priority=1), task_line())
    csrf = login(make_user())
    page = client.get("/annotate").text
    response = client.post("/annotate/submit", data=_form(page, csrf, pick="both_bad"), headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "<html" not in response.text and response.text.lstrip().startswith('<div id="workspace">')
    assert _field(response.text, "task_id") == str(second) and "Saved." in response.text


def test_invalid_form_422_keeps_the_task_with_a_message(client, db, make_user, login):
    (task_id,) = make_tasks(db, task_line())
    csrf = login(make_user())
    page = client.get("/annotate").text
    response = client.post("/annotate/submit", data=_form(page, csrf), headers={"HX-Request": "true"})
    assert response.status_code == 422 and "choice must be" in response.text
    assert _field(response.text, "task_id") == str(task_id)
    assert db.scalar(select(func.count()).select_from(Annotation)) == 0


def test_ranking_by_rank_fields_without_js(client, db, make_user, login):
    (task_id,) = make_tasks(db, task_line("ranking", n=3))
    csrf = login(make_user())
    page = client.get("/annotate").text
    shown = re.findall(r'name="rank_(\d+)"', page)
    assert len(shown) == 3 and "Sortable" not in page.split("</head>")[1][:0]  # selects are the no-JS path
    bad = client.post(
        "/annotate/submit",
        data=_form(page, csrf, **{f"rank_{shown[0]}": "1", f"rank_{shown[1]}": "1", f"rank_{shown[2]}": "2"}),
    )
    assert bad.status_code == 422 and "different rank" in bad.text
    ranks = {f"rank_{shown[0]}": "3", f"rank_{shown[1]}": "1", f"rank_{shown[2]}": "2"}
    ok = client.post("/annotate/submit", data=_form(page, csrf, **ranks), follow_redirects=False)
    assert ok.status_code == 303
    assert db.scalars(select(Annotation.ranking)).one() == [int(shown[1]), int(shown[2]), int(shown[0])]


def test_rating_with_critiques_and_rewrite(client, db, make_user, login):
    make_tasks(db, task_line("rating", n=2))
    csrf = login(make_user())
    page = client.get("/annotate").text
    ids = re.findall(r'name="rating_(\d+)" value="good"', page)
    missing = client.post("/annotate/submit", data=_form(page, csrf, **{f"rating_{ids[0]}": "good"}))
    assert missing.status_code == 422 and "rate every response" in missing.text
    data = _form(
        page,
        csrf,
        **{
            f"rating_{ids[0]}": "good",
            f"rating_{ids[1]}": "bad",
            f"critique_{ids[1]}": "wrong year",
            "rewrite": "The right answer.",
        },
    )
    assert client.post("/annotate/submit", data=data, follow_redirects=False).status_code == 303
    a = db.scalars(select(Annotation)).one()
    assert a.ratings == {ids[0]: "good", ids[1]: "bad"} and a.critiques == {ids[1]: "wrong year"}
    assert a.rewrite == "The right answer."


def test_skip_and_undo_forms(client, db, make_user, login):
    skipped, kept = make_tasks(db, task_line(priority=1), task_line())
    csrf = login(make_user())
    page = client.get("/annotate").text
    response = client.post(
        "/annotate/skip",
        data={"csrf_token": csrf, "task_id": str(skipped), "reason": "The prompt is unclear", "reason_detail": "typo"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert (
        db.scalars(select(Assignment.skip_reason).where(Assignment.task_id == skipped)).one()
        == "The prompt is unclear: typo"
    )
    db.rollback()
    page = client.get("/annotate").text
    assert _field(page, "task_id") == str(kept)
    client.post("/annotate/submit", data=_form(page, csrf, pick="tie"))
    page = client.get("/annotate").text
    assert 'data-testid="no-task"' in page
    annotation_id = db.scalars(select(Annotation.id)).one()
    db.rollback()
    assert f'data-testid="undo-{annotation_id}"' in page
    undo = client.post(
        "/annotate/undo", data={"csrf_token": csrf, "annotation_id": str(annotation_id)}, headers={"HX-Request": "true"}
    )
    assert undo.status_code == 200 and _field(undo.text, "task_id") == str(kept) and "Undone" in undo.text
    assert db.get(Task, kept).done_count == 0
    db.rollback()
    progress = client.get("/annotate/progress").text
    assert "undone" in progress and 'data-testid="progress-total">0<' in progress


def test_forms_need_csrf(client, db, make_user, login):
    make_tasks(db, task_line())
    login(make_user())
    page = client.get("/annotate").text
    data = _form(page, "wrong", pick="tie")
    assert client.post("/annotate/submit", data=data).status_code == 403


def test_annotators_never_see_others_labels(client, db, make_user, login):
    make_tasks(db, task_line(overlap=2))
    other = make_user()
    csrf = login(other)
    page = client.get("/annotate").text
    client.post("/annotate/submit", data=_form(page, csrf, pick="tie", critique="OTHER-PERSON-NOTE"))
    client.cookies.clear()
    login(make_user())
    page = client.get("/annotate").text
    progress = client.get("/annotate/progress").text
    assert "OTHER-PERSON-NOTE" not in page + progress and 'data-testid="progress-total">0<' in progress


def test_assets_come_from_the_cdn_unless_offline(client, db, make_user, login, settings, monkeypatch):
    make_tasks(db, task_line("ranking", n=2))
    login(make_user())
    monkeypatch.setattr(settings, "offline_assets", False)
    page = client.get("/annotate").text
    assert "https://unpkg.com/htmx.org@" in page and "https://unpkg.com/sortablejs@" in page
    assert "/static/js/annotate.js" in page and client.get("/static/js/annotate.js").status_code == 200
    # pinned, integrity-checked, and the vendored copy right behind each CDN copy
    assert page.count('crossorigin="anonymous"') == 2 and page.count('integrity="sha384-') == 2
    assert 'data-src="/static/vendor/sortablejs/Sortable.min.js"' in page
    monkeypatch.setattr(settings, "offline_assets", True)
    offline = client.get("/annotate").text
    assert "unpkg.com" not in offline and "asset_fallback.js" not in offline
    assert '<script src="/static/vendor/htmx/htmx.min.js"></script>' in offline


def test_empty_state_says_tasks_are_being_generated_while_a_job_makes_them(client, db, make_user, login):
    from tests.factories import make_job

    login(make_user())
    page = client.get("/annotate").text
    assert 'data-testid="no-task"' in page and "no new tasks are being generated" in page
    job = make_job(db, kind="world", status="running", progress_done=2.0, progress_total=5.0)
    page = client.get("/annotate").text
    assert f"Tasks are being generated: job {job.id}, 40%" in page and 'data-testid="no-task"' not in page
    assert 'hx-trigger="every 3s"' in page  # asks again until the first task arrives
    job.status = "succeeded"
    db.commit()
    assert 'data-testid="no-task"' in client.get("/annotate").text


def test_history_shows_the_labels_and_prompt_and_opens_a_past_answer_read_only(client, db, make_user, login):
    make_tasks(db, task_line(prompt="A prompt worth remembering"))
    user = make_user()
    csrf = login(user)
    page = client.get("/annotate").text
    picks = _picks(page)
    client.post("/annotate/submit", data=_form(page, csrf, pick=picks[1], strength="3"))
    (annotation_id,) = db.scalars(select(Annotation.id)).all()
    db.rollback()  # never hold SQLite's writer gate while the app works
    progress = client.get("/annotate/progress").text
    assert "B better (much)" in progress and "A prompt worth remembering" in progress
    assert f'href="/annotate/history/{annotation_id}"' in progress
    review = client.get(f"/annotate/history/{annotation_id}")
    assert review.status_code == 200 and "B better (much)" in review.text and "read-only" in review.text
    assert "<form" not in review.text.split("<main", 1)[1] and "<input" not in review.text.split("<main", 1)[1]
    client.cookies.clear()
    login(make_user())
    assert client.get(f"/annotate/history/{annotation_id}").status_code == 404  # someone else's answer


def test_every_choice_has_its_key_shown_on_the_page(client, db, make_user, login):
    make_tasks(db, task_line("pairwise", priority=2), task_line("ranking", n=3, priority=1))
    csrf = login(make_user())
    page = client.get("/annotate").text
    for key in ("1", "2", "T", "X", "L", "C", "M", "G", "N", "S"):
        assert f"<kbd>{key}</kbd>" in page or f'<kbd class="js-only">{key}</kbd>' in page, key
    client.post("/annotate/submit", data=_form(page, csrf, pick="tie"))
    ranking = client.get("/annotate").text
    assert 'data-kind="ranking"' in ranking and "<kbd>R</kbd> to reach the list" in ranking


def test_guidelines_unfold_on_first_visit_and_when_they_change_and_the_submit_records_them(
    client, db, make_user, login
):
    from app.services.guidelines import save_guidelines

    make_tasks(db, task_line(), task_line())
    v1 = save_guidelines(db, body="Prefer **correct** answers.", job_id=None, author_id=None).guidelines
    db.commit()
    csrf = login(make_user())
    page = client.get("/annotate").text
    disclosure = re.search(r'<details class="card guidelines"[^>]*>', page).group(0)
    assert " open" in disclosure and "<strong>correct</strong>" in page and "updated" not in page
    assert _field(page, "guideline_version_id") == str(v1.id)
    again = client.get("/annotate").text  # seen once: folded from now on
    assert " open" not in re.search(r'<details class="card guidelines"[^>]*>', again).group(0)
    v2 = save_guidelines(db, body="Prefer correct, then short answers.", job_id=None, author_id=None).guidelines
    db.commit()
    changed = client.get("/annotate").text
    assert " open" in re.search(r'<details class="card guidelines"[^>]*>', changed).group(0)
    assert "updated" in changed and "then short answers" in changed
    # The form was rendered under version 1 (before the change): the annotation says so.
    client.post("/annotate/submit", data=_form(page, csrf, pick="tie", guideline_version_id=str(v1.id)))
    assert db.scalars(select(Annotation.guideline_version_id)).one() == v1.id != v2.id
    db.rollback()


def test_a_refused_submit_keeps_the_text_in_the_task_or_to_copy(client, db, make_user, login):
    from datetime import timedelta

    from app.models import utcnow
    from app.services.assignment import next_task

    taken, _ = make_tasks(db, task_line(priority=1), task_line())
    csrf = login(make_user())
    page = client.get("/annotate").text
    gid = _picks(page)[0]
    texts = {
        "critique": "A long overall critique.",
        "rewrite": "The ideal answer,\nin two lines.",
        f"critique_{gid}": "Too vague.",
    }
    # Invalid (no choice): the same task again, with the text in its own boxes.
    invalid = client.post("/annotate/submit", data=_form(page, csrf, **texts))
    assert invalid.status_code == 422 and _field(invalid.text, "task_id") == str(taken)
    assert '<textarea name="critique" rows="2">A long overall critique.</textarea>' in invalid.text
    assert "The ideal answer,\nin two lines.</textarea>" in invalid.text and "Too vague.</textarea>" in invalid.text
    # The lease expired and another annotator took the only slot: a clear message, the text kept to copy.
    db.execute(Assignment.__table__.update().values(lease_expires_at=utcnow() - timedelta(minutes=1)))
    db.commit()
    assert next_task(db, user=make_user(), lease_minutes=10).task_id == taken
    db.commit()
    lost = client.post("/annotate/submit", data=_form(page, csrf, pick="tie", **texts))
    assert lost.status_code == 409 and "taken by other annotators; your annotation was not stored" in lost.text
    assert 'data-testid="kept-text"' in lost.text and f"Your text for task {taken} was not stored" in lost.text
    assert re.search(
        r'<textarea readonly[^>]*data-testid="kept-rewrite">The ideal answer,\nin two lines.</textarea>', lost.text
    )
    assert _field(lost.text, "task_id") != str(taken)  # the next task, with empty boxes
    assert db.scalar(select(func.count()).select_from(Annotation)) == 0


def test_the_page_renews_its_lease_and_hears_when_the_task_is_lost(client, db, make_user, login):
    from datetime import timedelta

    from app.models import utcnow
    from app.services.assignment import next_task

    (task_id,) = make_tasks(db, task_line())
    csrf = login(make_user())
    client.get("/annotate")
    htmx = {"HX-Request": "true", "X-CSRF-Token": csrf}
    renewed = client.post("/annotate/renew", data={"task_id": str(task_id)}, headers=htmx)
    assert renewed.status_code == 200 and "(renewed)" in renewed.text and 'id="lease"' in renewed.text
    assert "<html" not in renewed.text
    plain = client.post("/annotate/renew", data={"task_id": str(task_id), "csrf_token": csrf}, follow_redirects=False)
    assert plain.status_code == 303 and plain.headers["location"] == "/annotate"
    db.execute(Assignment.__table__.update().values(lease_expires_at=utcnow() - timedelta(minutes=1)))
    db.commit()
    next_task(db, user=make_user(), lease_minutes=10)
    db.commit()
    lost = client.post("/annotate/renew", data={"task_id": str(task_id)}, headers=htmx)
    assert lost.status_code == 409 and 'data-lost="1"' in lost.text and "Copy your text" in lost.text
    assert (
        client.post("/annotate/renew", data={"task_id": str(task_id)}, headers={"HX-Request": "true"}).status_code
        == 403
    )
