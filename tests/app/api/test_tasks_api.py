"""The annotator's tasks JSON API (app.api.tasks): the next task's shape, 204, 401, skip, chat prompts."""

from __future__ import annotations

from tests.factories import make_tasks, task_line


def test_api_next_shape_204_and_skip(client, db, api):
    (task_id,) = make_tasks(db, task_line(prompt="What is **RLHF**?", responses=["one", "two"]))
    _, headers = api()
    response = client.get("/api/v1/tasks/next", headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert body["task_id"] == task_id and body["kind"] == "pairwise" and body["prompt"] == "What is **RLHF**?"
    assert sorted(r["text"] for r in body["responses"]) == ["one", "two"] and all(r["id"] for r in body["responses"])
    assert client.get("/api/v1/tasks/next", headers=headers).json()["task_id"] == task_id
    skip = client.post(f"/api/v1/tasks/{task_id}/skip", headers=headers, json={"reason": "off topic"})
    assert skip.status_code == 200 and skip.json() == {"task_id": task_id, "status": "skipped"}
    assert client.post(f"/api/v1/tasks/{task_id}/skip", headers=headers, json={}).status_code == 422
    empty = client.get("/api/v1/tasks/next", headers=headers)
    assert empty.status_code == 204 and empty.content == b""
    assert client.get("/api/v1/tasks/next").status_code == 401


def test_api_chat_prompt_is_returned_as_messages(client, db, api):
    make_tasks(db, {"messages": [{"role": "user", "content": "hi"}], "responses": ["a"], "kind": "rating"})
    _, headers = api()
    assert client.get("/api/v1/tasks/next", headers=headers).json()["prompt"] == [{"role": "user", "content": "hi"}]


def test_api_retire_tasks_in_bulk_admin_only_all_or_nothing(client, db, api):
    first, second = make_tasks(db, task_line(), task_line())
    _, admin = api("admin")
    _, annotator = api()
    assert client.post("/api/v1/tasks/retire", json={"ids": [first]}, headers=annotator).status_code == 403
    missing = client.post("/api/v1/tasks/retire", json={"ids": [first, 424242]}, headers=admin)
    assert missing.status_code == 404 and "424242" in missing.json()["detail"]
    assert client.post("/api/v1/tasks/retire", json={"ids": []}, headers=admin).status_code == 422
    res = client.post("/api/v1/tasks/retire", json={"ids": [first, second, first]}, headers=admin)
    assert res.status_code == 200 and res.json() == {"retired": 2, "already": 0}
    assert client.get("/api/v1/tasks/next", headers=annotator).status_code == 204


def test_skip_without_a_token_is_401_before_its_input_is_validated(client):
    """Authentication before validation: an anonymous caller gets 401 whatever the body and the path say."""
    for body in (None, {}, {"reason": ""}, {"bogus": 1}):
        response = client.post("/api/v1/tasks/1/skip", json=body)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer", response.text
    assert client.post("/api/v1/tasks/not-a-number/skip", json={}).status_code == 401
    assert client.get("/api/v1/annotations?offset=-1").status_code == 401


def test_renew_extends_my_lease_and_says_why_when_it_cannot(client, db, api):
    first, second = make_tasks(db, task_line(priority=1), task_line())
    _, headers = api()
    offered = client.get("/api/v1/tasks/next", headers=headers).json()
    renewed = client.post(f"/api/v1/tasks/{first}/renew", headers=headers)
    assert renewed.status_code == 200 and renewed.json()["task_id"] == first
    assert renewed.json()["lease_expires_at"] >= offered["lease_expires_at"]
    assert client.post(f"/api/v1/tasks/{second}/renew", headers=headers).status_code == 404  # not leased to me
    client.post(
        "/api/v1/annotations", headers={**headers, "Idempotency-Key": "k"}, json={"task_id": first, "choice": "tie"}
    )
    done = client.post(f"/api/v1/tasks/{first}/renew", headers=headers)
    assert done.status_code == 409 and "already annotated" in done.json()["detail"]
    assert client.post(f"/api/v1/tasks/{first}/renew").status_code == 401
