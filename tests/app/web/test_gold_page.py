"""The gold pages: the admin's /admin/gold (mark, unmark, reset, allow), gold accuracy on /admin/stats, an
annotate page that looks the same for a gold task as for any other, and the qualification result page."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import select

from app.models import GoldAnswer, QualificationResult, TaskPosition
from tests.factories import gold_line, make_tasks, task_line

SECRET = "SECRET-EXPLANATION-4c9"


def _skeleton(html: str, *texts: str) -> str:
    """The page with what differs between any two tasks blanked: texts, numbers and the per-render tokens."""
    for text in texts:
        html = html.replace(text, "TEXT")
    html = re.sub(r'name="idempotency_key" value="[^"]*"', "KEY", html)
    return re.sub(r"\d+", "N", html)


def test_the_annotate_page_of_a_gold_task_is_the_page_of_any_task(client, db, make_user, login, settings):
    gold_line_, regular_line = gold_line(explanation=SECRET), task_line()
    make_tasks(db, gold_line_, regular_line)
    settings.gold_rate = 1.0
    first, second = make_user(username="first-annotator"), make_user(username="other-annotator")
    login(first)
    gold_page = client.get("/annotate").text
    assert gold_line_["prompt"] in gold_page
    settings.gold_rate = 0.0
    login(second)
    regular_page = client.get("/annotate").text
    assert regular_line["prompt"] in regular_page
    texts = [*gold_line_["responses"], *regular_line["responses"], gold_line_["prompt"], regular_line["prompt"]]
    blank = [*texts, "first-annotator", "other-annotator"]
    csrf = re.findall(r'name="csrf_token" value="([^"]*)"', gold_page) + re.findall(
        r'name="csrf_token" value="([^"]*)"', regular_page
    )
    csrf += re.findall(r'"X-CSRF-Token": "([^"]*)"', gold_page + regular_page)
    csrf += re.findall(r"rlhf-draft:([^:\"]+):", gold_page + regular_page)  # the draft key names its annotator
    assert _skeleton(gold_page, *blank, *csrf) == _skeleton(regular_page, *blank, *csrf)
    assert SECRET not in gold_page and "gold" not in gold_page.lower()


def test_admin_marks_a_task_gold_and_manages_qualification(client, db, make_user, login):
    (task_id,) = make_tasks(db, task_line())
    ids = list(db.scalars(select(TaskPosition.generation_id).where(TaskPosition.task_id == task_id)))
    db.rollback()  # the test's reads must not hold the SQLite writer gate while the app writes
    annotator = make_user(username="ann-" + uuid.uuid4().hex[:6])
    annotator_id, annotator_name = annotator.id, annotator.username
    db.rollback()
    csrf = login(make_user("admin"))
    bad = client.post("/admin/gold", data={"csrf_token": csrf, "task_id": str(task_id), "answer": "{nope"})
    assert bad.status_code == 422 and "not JSON" in bad.text
    assert client.post("/admin/gold", data={"csrf_token": csrf, "task_id": "x1", "answer": "{}"}).status_code == 422
    answer = f'{{"choice": "chosen", "chosen_id": {ids[1]}}}'
    data = {
        "csrf_token": csrf,
        "task_id": str(task_id),
        "answer": answer,
        "explanation": SECRET,
        "qualification": "true",
    }
    marked = client.post("/admin/gold", data=data, follow_redirects=False)
    assert marked.status_code == 303, marked.text
    gold = db.get(GoldAnswer, task_id)
    assert gold.answer == {"choice": "chosen", "chosen_id": ids[1]} and gold.qualification
    assert gold.explanation == SECRET
    db.rollback()
    assert re.search(rf"<td>{task_id}</td><td>pairwise <a [^>]*>gold</a>", client.get("/admin/tasks").text)
    page = client.get("/admin/gold").text
    assert f'data-testid="gold-{task_id}"' in page and SECRET in page and annotator_name in page
    allowed = client.post(f"/admin/gold/qualification/{annotator_id}/allow", data={"csrf_token": csrf})
    assert allowed.status_code == 200 and db.get(QualificationResult, annotator_id).status == "allowed"
    db.rollback()
    client.post(f"/admin/gold/qualification/{annotator_id}/reset", data={"csrf_token": csrf})
    assert db.get(QualificationResult, annotator_id) is None
    db.rollback()
    client.post(f"/admin/gold/{task_id}/unmark", data={"csrf_token": csrf})
    assert db.get(GoldAnswer, task_id) is None


def test_failed_qualification_shows_the_message_and_the_explanations(client, db, make_user, login, settings):
    settings.qualification_required, settings.qualification_threshold = True, 1.0
    (task_id,) = make_tasks(db, gold_line(qualification=True, explanation=SECRET), task_line())[:1]
    right = db.get(GoldAnswer, task_id).answer["chosen_id"]
    db.rollback()
    csrf = login(make_user())
    page = client.get("/annotate").text
    assert 'data-testid="qualification-progress"' in page
    wrong = next(p for p in re.findall(r'name="pick" value="(\d+)"', page) if int(p) != right)
    key = re.search(r'name="idempotency_key" value="([^"]*)"', page).group(1)
    form = {"csrf_token": csrf, "task_id": str(task_id), "idempotency_key": key, "pick": wrong, "strength": "2"}
    response = client.post("/annotate/submit", data=form)
    assert response.status_code == 200
    assert 'data-testid="qualification-failed"' in response.text and "0 of 1 right" in response.text
    result = client.get("/annotate/qualification").text
    assert "Not passed" in result and SECRET in result and 'data-testid="qualification-item"' in result


def test_stats_page_shows_gold_accuracy_with_its_interval(client, db, make_user, login, settings):
    make_tasks(db, gold_line())
    settings.gold_rate = 1.0
    annotator = make_user()
    csrf = login(annotator)
    page = client.get("/annotate").text
    task_id = re.search(r'name="task_id" value="(\d+)"', page).group(1)
    right = db.get(GoldAnswer, int(task_id)).answer["chosen_id"]
    db.rollback()
    key = re.search(r'name="idempotency_key" value="([^"]*)"', page).group(1)
    form = {"csrf_token": csrf, "task_id": task_id, "idempotency_key": key, "pick": str(right), "strength": "1"}
    assert client.post("/annotate/submit", data=form, follow_redirects=False).status_code == 303
    progress = client.get("/annotate/progress").text
    annotation_id = re.search(r'href="/annotate/history/(\d+)"', progress).group(1)
    for page in (progress, client.get(f"/annotate/history/{annotation_id}").text):
        assert "gold" not in page.lower()  # the annotator's own history: their answer, nothing of the task's kind
    login(make_user("admin"))
    stats = client.get("/admin/stats").text
    row = re.search(rf'data-testid="gold-{annotator.username}">(.*?)</tr>', stats, re.S).group(1)
    assert "100%" in row and "21%–100%" in row
