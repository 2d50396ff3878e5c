"""Task import (JSONL, API list, admin upload, CLI): validation, all-or-nothing, eval prompts, limits."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from app.models import Generation, Prompt, Task, TaskPosition
from app.services.tasks import TaskImportError, import_tasks
from tests.factories import jsonl, make_tasks, task_line


def _counts(db) -> tuple[int, int, int]:
    return tuple(db.scalar(select(func.count()).select_from(m)) for m in (Task, Generation, Prompt))


def test_import_creates_tasks_generations_and_positions(db):
    lines = [
        task_line("pairwise", overlap=3, priority=5, meta={"batch": "b1"}),
        {
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            "responses": ["a", "b", "c"],
            "kind": "ranking",
        },
        {"prompt": [{"role": "user", "content": "chat via prompt"}], "responses": ["only"], "kind": "rating"},
    ]
    result = import_tasks(db, lines=jsonl(*lines).splitlines(), max_text_bytes=65536)
    db.commit()
    tasks = [db.get(Task, i) for i in result.task_ids]
    assert [t.kind for t in tasks] == ["pairwise", "ranking", "rating"]
    assert (tasks[0].overlap, tasks[0].priority, tasks[0].meta, tasks[0].done_count) == (3, 5, {"batch": "b1"}, 0)
    assert tasks[1].overlap == 1 and tasks[1].priority == 0
    positions = db.scalars(
        select(TaskPosition).where(TaskPosition.task_id == tasks[1].id).order_by(TaskPosition.position)
    ).all()
    gens = [db.get(Generation, p.generation_id) for p in positions]
    assert [g.text for g in gens] == ["a", "b", "c"]
    assert all(g.source == "imported" and g.model_version_id is None for g in gens)
    chat = db.get(Prompt, tasks[1].prompt_id)
    assert chat.text is None and chat.messages[1] == {"role": "user", "content": "hi"} and chat.split == "train"
    assert db.get(Prompt, tasks[2].prompt_id).messages == [{"role": "user", "content": "chat via prompt"}]


def test_same_prompt_is_shared_and_blank_lines_ignored(db):
    text = jsonl(task_line(prompt="same"), task_line(prompt="same")) + "\n   \n"
    result = import_tasks(db, lines=text.splitlines(), max_text_bytes=65536)
    assert len(result.task_ids) == 2 and result.prompts_created == 1
    assert len({db.get(Task, i).prompt_id for i in result.task_ids}) == 1


BAD_LINES = [
    ({"prompt": "p", "responses": ["a", "b", "c"], "kind": "pairwise"}, "exactly 2 responses"),
    ({"prompt": "p", "responses": ["a"], "kind": "ranking"}, "2 to 8 responses"),
    ({"prompt": "p", "responses": [str(i) for i in range(9)], "kind": "ranking"}, "2 to 8 responses"),
    ({"prompt": "p", "responses": [], "kind": "rating"}, "1 to 8 responses"),
    ({"prompt": "p", "responses": ["a", "b"], "kind": "vote"}, "kind must be"),
    ({"prompt": "p", "responses": ["a", "b"]}, "kind must be"),
    ({"responses": ["a", "b"], "kind": "pairwise"}, "prompt is missing"),
    ({"prompt": "  ", "responses": ["a", "b"], "kind": "pairwise"}, "prompt is empty"),
    ({"prompt": "p", "responses": ["a", 3], "kind": "pairwise"}, "list of strings"),
    ({"prompt": "p", "responses": ["a", ""], "kind": "pairwise"}, "responses[1] is empty"),
    ({"prompt": "p", "responses": ["a", "b"], "kind": "pairwise", "overlap": 0}, "overlap must be between"),
    ({"prompt": "p", "responses": ["a", "b"], "kind": "pairwise", "overlap": "2"}, "overlap must be an integer"),
    ({"prompt": "p", "responses": ["a", "b"], "kind": "pairwise", "priority": 1.5}, "priority must be an integer"),
    ({"prompt": "p", "responses": ["a", "b"], "kind": "pairwise", "meta": []}, "meta must be"),
    ({"prompt": "p", "respones": ["a", "b"], "kind": "pairwise"}, "unknown field(s) respones"),
    (
        {"prompt": "p", "messages": [{"role": "user", "content": "x"}], "responses": ["a", "b"], "kind": "pairwise"},
        "not both",
    ),
    ({"messages": [{"role": "robot", "content": "x"}], "responses": ["a", "b"], "kind": "pairwise"}, "role must be"),
    ({"prompt": "p", "responses": ["a", "x" * 70000], "kind": "pairwise"}, "responses[1] is longer than 65536 bytes"),
    ({"prompt": "é" * 40000, "responses": ["a", "b"], "kind": "pairwise"}, "prompt is longer than 65536 bytes"),
    (["not", "an", "object"], "JSON object"),
]


@pytest.mark.parametrize("bad,reason", BAD_LINES)
def test_any_bad_line_stores_nothing_and_names_the_line(db, bad, reason):
    text = jsonl(task_line(), task_line(), bad, task_line())
    before = _counts(db)
    with pytest.raises(TaskImportError) as info:
        import_tasks(db, lines=text.splitlines(), max_text_bytes=65536)
    db.rollback()
    assert [n for n, _ in info.value.errors] == [3]
    assert reason in info.value.errors[0][1], info.value.errors
    assert "line 3" in str(info.value)
    assert _counts(db) == before


def test_every_bad_line_is_listed_including_invalid_json(db):
    text = "{not json\n" + jsonl(task_line()) + '{"prompt": "p"}\n'
    with pytest.raises(TaskImportError) as info:
        import_tasks(db, lines=text.splitlines(), max_text_bytes=65536)
    assert [n for n, _ in info.value.errors] == [1, 3]
    assert "invalid JSON" in info.value.errors[0][1]


def test_eval_split_prompts_never_become_tasks(db):
    db.add(
        Prompt(
            text="held out",
            content_hash=__import__("app.services.prompts", fromlist=["x"]).prompt_hash(text="held out", messages=None),
            split="eval",
            tags=[],
            meta={},
        )
    )
    db.commit()
    with pytest.raises(TaskImportError) as info:
        import_tasks(db, lines=jsonl(task_line(), task_line(prompt="held out")).splitlines(), max_text_bytes=65536)
    db.rollback()
    assert info.value.errors[0][0] == 2 and "eval split" in info.value.errors[0][1]
    assert db.scalar(select(func.count()).select_from(Task)) == 0


def test_empty_input_is_an_error(db):
    with pytest.raises(TaskImportError, match="no tasks"):
        import_tasks(db, lines=["", "  "], max_text_bytes=65536)


# ---- HTTP API -----------------------------------------------------------------------------------------------


def test_api_import_admin_only_201_and_422_lists_items(client, db, api):
    _, annotator = api()
    _, admin = api("admin")
    body = [task_line(), task_line("ranking", n=4)]
    assert client.post("/api/v1/tasks", headers=annotator, json=body).status_code == 403
    assert client.post("/api/v1/tasks", json=body).status_code == 401
    ok = client.post("/api/v1/tasks", headers=admin, json=body)
    assert ok.status_code == 201 and ok.json()["created"] == 2 and len(ok.json()["task_ids"]) == 2
    bad = client.post("/api/v1/tasks", headers=admin, json=[task_line(), {"prompt": "p", "kind": "pairwise"}])
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["line"] == 2 and "responses" in bad.json()["errors"][0]["reason"]
    assert db.scalar(select(func.count()).select_from(Task)) == 2
    db.rollback()  # SQLite: the test's read transaction would hold the (IMMEDIATE) write lock
    assert client.post("/api/v1/tasks", headers=admin, json={"prompt": "p"}).status_code == 422


def test_api_import_not_json_and_over_limit(client, api, settings, monkeypatch):
    _, admin = api("admin")
    bad = client.post("/api/v1/tasks", headers={**admin, "content-type": "application/json"}, content=b"{oops")
    assert bad.status_code == 422 and "not JSON" in bad.json()["detail"]
    monkeypatch.setattr(settings, "max_upload_bytes", 200)
    big = client.post("/api/v1/tasks", headers=admin, json=[task_line(), task_line(), task_line()])
    assert big.status_code == 413 and "upload limit" in big.json()["detail"]


def test_openapi_documents_task_and_annotation_endpoints_with_examples(client, make_user, login):
    login(make_user("admin"))
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path, method in [
        ("/api/v1/tasks", "post"),
        ("/api/v1/tasks/next", "get"),
        ("/api/v1/annotations", "post"),
        ("/api/v1/annotations", "get"),
        ("/api/v1/annotations/{annotation_id}", "delete"),
        ("/api/v1/tasks/{task_id}/skip", "post"),
    ]:
        assert method in paths[path], path
    assert paths["/api/v1/tasks"]["post"]["requestBody"]["content"]["application/json"]["example"][0]["kind"]
    schemas = spec["components"]["schemas"]
    assert schemas["AnnotationIn"]["examples"] and schemas["NextTaskOut"]["examples"]
    params = {p["name"] for p in paths["/api/v1/annotations"]["post"]["parameters"]}
    assert "Idempotency-Key" in params


# ---- admin page ---------------------------------------------------------------------------------------------


def test_admin_upload_imports_and_lists_counts(client, db, make_user, login):
    csrf = login(make_user("admin"))
    data = jsonl(task_line(overlap=2, prompt="Is <b>this</b> escaped?"), task_line("rating", n=3))
    response = client.post(
        "/admin/tasks/upload",
        data={"csrf_token": csrf},
        files={"file": ("t.jsonl", data.encode(), "application/jsonl")},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/admin/tasks?imported=2"
    page = client.get("/admin/tasks?imported=2")
    assert page.status_code == 200 and "Imported 2 task(s)" in page.text
    assert "0 / 2" in page.text and "Is &lt;b&gt;this&lt;/b&gt; escaped?" in page.text
    assert "2 task(s): 2 open, 0 completed" in page.text


def test_admin_upload_bad_file_422_lists_lines_and_stores_nothing(client, db, make_user, login):
    csrf = login(make_user("admin"))
    data = jsonl(task_line(), {"prompt": "p", "responses": ["a"], "kind": "pairwise"}) + "{broken\n"
    response = client.post(
        "/admin/tasks/upload",
        data={"csrf_token": csrf},
        files={"file": ("t.jsonl", data.encode(), "application/jsonl")},
    )
    assert response.status_code == 422
    assert (
        "line 2: a pairwise task needs exactly 2 responses" in response.text and "line 3: invalid JSON" in response.text
    )
    assert db.scalar(select(func.count()).select_from(Task)) == 0


def test_admin_upload_over_limit_is_413(client, make_user, login, settings, monkeypatch):
    csrf = login(make_user("admin"))
    monkeypatch.setattr(settings, "max_upload_bytes", 100)
    data = jsonl(task_line(), task_line())
    response = client.post(
        "/admin/tasks/upload",
        data={"csrf_token": csrf},
        files={"file": ("t.jsonl", data.encode(), "application/jsonl")},
    )
    assert response.status_code == 413 and "MiB limit" in response.text


def test_admin_tasks_page_is_admin_only(client, make_user, login):
    login(make_user("annotator"))
    assert client.get("/admin/tasks").status_code == 403


def test_admin_list_counts_leases_and_skips(client, db, make_user, login):
    from app.services.assignment import next_task, skip_task

    (task_id,) = make_tasks(db, task_line(overlap=3))
    a, b = make_user(), make_user()
    next_task(db, user=a, lease_minutes=10)
    next_task(db, user=b, lease_minutes=10)
    skip_task(db, user=b, task_id=task_id, reason="unclear")
    db.commit()
    login(make_user("admin"))
    import re

    page = client.get("/admin/tasks").text
    row = re.search(rf"<tr[^>]*>\s*<td>{task_id}</td>(.*?)</tr>", page, re.S).group(1)
    cells = [c.strip() for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
    assert cells[2:5] == ["0 / 3", "1", "1"], cells


# ---- CLI ----------------------------------------------------------------------------------------------------


def test_cli_import_success_and_bad_line_exit_2(settings, db, tmp_path):
    from typer.testing import CliRunner

    from app.cli import app as cli

    good = tmp_path / "good.jsonl"
    good.write_text(jsonl(task_line(), task_line("ranking", n=5)))
    result = CliRunner().invoke(cli, ["tasks", "import", str(good)])
    assert result.exit_code == 0, result.output
    assert "imported 2 task(s)" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text(jsonl(task_line(), task_line(), {"prompt": "p", "responses": ["a", "b"], "kind": "nope"}))
    result = CliRunner().invoke(cli, ["tasks", "import", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:3: kind must be" in result.output and len(result.output.strip().splitlines()) == 1
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(Task)) == 2
    missing = CliRunner().invoke(cli, ["tasks", "import", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "no such file" in missing.output


def test_import_checks_lengths_against_the_current_policys_context(db, tiny_lm_dir):
    """A rejection-sampling round once failed on an imported task with responses longer than the model's context:
    a prompt that can never fit refuses its line, a task longer than the context is imported with a warning."""
    from tests.factories import register_policy

    register_policy(db, tiny_lm_dir)  # a 64-token context
    db.commit()
    long_response = {"prompt": "what is 2 plus 2?", "responses": ["four " * 80, "4"], "kind": "pairwise"}
    never = {"prompt": "two " * 200, "responses": ["a", "b"], "kind": "pairwise"}
    with pytest.raises(TaskImportError) as refused:
        import_tasks(db, lines=[json.dumps(long_response), json.dumps(never)], max_text_bytes=64 * 1024)
    assert [n for n, _ in refused.value.errors] == [2] and "can never be answered" in refused.value.errors[0][1]
    db.rollback()
    result = import_tasks(db, lines=[json.dumps(long_response)], max_text_bytes=64 * 1024)
    assert len(result.task_ids) == 1 and result.warnings[0].startswith("line 1: prompt and longest response")
