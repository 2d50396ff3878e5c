"""POST/GET /api/v1/prompts: JSON or file, all or nothing; admins only."""

from sqlalchemy import func, select

from app.models import Prompt


def test_post_prompts_json_and_file_all_or_nothing(client, db, api, settings, monkeypatch):
    _, headers = api("admin")
    res = client.post(
        "/api/v1/prompts",
        json=[{"prompt": "a"}, {"prompt": "a"}, {"messages": [{"role": "user", "content": "b"}]}],
        headers=headers,
    )
    assert res.status_code == 200 and res.json() == {"lines": 3, "created": 2, "duplicates": 1, "warnings": []}
    res = client.post("/api/v1/prompts", json={"prompts": [{"prompt": "c"}, {"prompt": ""}]}, headers=headers)
    assert res.status_code == 422 and res.json()["detail"]["errors"] == ["body:2: `prompt` must be a non-empty string"]
    res = client.post("/api/v1/prompts", files={"file": ("p.csv", b"prompt,tags\nd,x\n")}, headers=headers)
    assert res.status_code == 200 and res.json()["created"] == 1
    res = client.post("/api/v1/prompts", files={"file": ("p.png", b"\x89PNG")}, headers=headers)
    assert res.status_code == 422 and "unknown file type" in res.json()["detail"]["message"]
    res = client.post("/api/v1/prompts", content=b"not json", headers={**headers, "content-type": "application/json"})
    assert res.status_code == 422
    monkeypatch.setattr(settings, "max_upload_bytes", 8)
    res = client.post("/api/v1/prompts", json=[{"prompt": "far too long for the limit"}], headers=headers)
    assert res.status_code == 413
    assert db.scalar(select(func.count()).select_from(Prompt)) == 3
    db.rollback()  # SQLite: never hold the write lock while the app serves a request
    listed = client.get("/api/v1/prompts", headers=headers).json()
    assert listed["counts"] == {"train": 3} and listed["prompts"][0]["prompt"] == "d"


def test_post_prompts_retire_takes_their_tasks(client, db, api):
    from tests.factories import make_tasks, task_line

    (task_id,) = make_tasks(db, task_line(prompt="retire me"))
    prompt_id = db.scalar(select(Prompt.id).where(Prompt.text == "retire me"))
    db.rollback()
    _, headers = api("admin")
    res = client.post("/api/v1/prompts/retire", json={"ids": [prompt_id]}, headers=headers)
    assert res.status_code == 200 and res.json() == {"retired": 1, "already": 0, "tasks_retired": 1}
    assert client.post("/api/v1/prompts/retire", json={"ids": [9999]}, headers=headers).status_code == 404
