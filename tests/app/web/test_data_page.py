"""/admin/data: the data manager page. Filters and search (the page, or its results block for htmx), a task with
its responses and annotations, bulk actions as plain forms (Post/Redirect/Get back to the same filters), admins
only, linked from the admin navigation."""

from types import SimpleNamespace

from sqlalchemy import select

from app.models import Task
from tests.factories import build_dataset


def test_data_page_filters_opens_a_task_and_acts_in_bulk(client, db, make_user, login):
    built = build_dataset(db)
    ds = SimpleNamespace(**{k: getattr(built, k).id for k in ("t1", "t2", "t3", "t6")})
    db.rollback()  # plain ids from here: the test's session never holds the SQLite writer gate while the app runs
    csrf = login(make_user("admin"))
    page = client.get("/admin/data")
    assert page.status_code == 200 and 'href="/admin/data"' in page.text  # the navigation links it
    assert f'href="/admin/data/tasks/{ds.t6}"' in page.text
    ranking = client.get("/admin/data", params={"resource": "tasks", "kind": "ranking"})
    assert f'value="{ds.t3}"' in ranking.text and f'value="{ds.t1}"' not in ranking.text
    frag = client.get("/admin/data", params={"q": "colour"}, headers={"HX-Request": "true"})
    assert frag.text.lstrip().startswith('<section class="card" id="data-results">') and "Name a colour." in frag.text
    assert "What is 2+2?" not in frag.text
    notes = client.get("/admin/data", params={"resource": "annotations", "annotator": "bob"})
    assert notes.status_code == 200 and "chose #" in notes.text and "alice" not in notes.text
    prompts = client.get("/admin/data", params={"resource": "prompts", "split": "eval"})
    assert prompts.status_code == 200 and "Held out?" in prompts.text and "Name a colour." not in prompts.text
    bad = client.get("/admin/data", params={"kind": "essay"})
    assert bad.status_code == 422 and "kind must be one of" in bad.text

    task = client.get(f"/admin/data/tasks/{ds.t1}")
    assert task.status_code == 200 and "What is 2+2?" in task.text
    assert "alice" in task.text and "bob" in task.text and "<pre>4</pre>" in task.text
    assert client.get("/admin/data/tasks/999999").status_code == 404

    done = client.post(
        "/admin/data/bulk",
        data={
            "csrf_token": csrf,
            "resource": "tasks",
            "action": "retire",
            "ids": [ds.t1, ds.t2],
            "back": "resource=tasks&kind=pairwise",
        },
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert done.headers["location"] == "/admin/data?resource=tasks&kind=pairwise&notice=2+task%28s%29+retired"
    assert "2 task(s) retired" in client.get(done.headers["location"]).text
    assert db.scalar(select(Task.retired_at).where(Task.id == ds.t1)) is not None
    db.rollback()
    client.post(
        "/admin/data/bulk",
        data={"csrf_token": csrf, "resource": "tasks", "action": "priority", "priority": "9", "ids": [ds.t3]},
    )
    assert db.scalar(select(Task.priority).where(Task.id == ds.t3)) == 9
    db.rollback()
    back = client.post(
        "/admin/data/bulk",
        data={
            "csrf_token": csrf,
            "resource": "tasks",
            "action": "requeue",
            "ids": [ds.t1],
            "return_to": f"/admin/data/tasks/{ds.t1}",
        },
        follow_redirects=False,
    )
    assert back.status_code == 303 and back.headers["location"] == f"/admin/data/tasks/{ds.t1}"
    assert "<dt>State</dt><dd>open</dd>" in client.get(back.headers["location"]).text  # retired, then re-queued
    nothing = client.post("/admin/data/bulk", data={"csrf_token": csrf, "resource": "tasks", "action": "retire"})
    assert nothing.status_code == 422 and "select at least one row" in nothing.text
    forged = client.post("/admin/data/bulk", data={"resource": "tasks", "action": "retire", "ids": [ds.t3]})
    assert forged.status_code == 403


def test_data_page_is_admin_only(client, make_user, login):
    login(make_user("annotator"))
    assert client.get("/admin/data").status_code == 403
    assert client.get("/admin/data/tasks/1").status_code == 403
