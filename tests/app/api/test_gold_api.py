"""The gold and qualification API: gold tasks created and marked by admins, mixed into an annotator's queue in the
same JSON as any task with the answer nowhere an annotator can reach, the qualification gate (403 with a message)
and its result, and gold accuracy in `GET /api/v1/stats`."""

from __future__ import annotations

import json
import uuid

from tests.factories import gold_line, task_line

SECRET = "SECRET-EXPLANATION-7b1"


def _submit(client, headers, task, *, pick: int):
    """Answer a pairwise task choosing its response `pick` (in the order shown)."""
    body = {"task_id": task["task_id"], "choice": "chosen", "chosen_id": task["responses"][pick]["id"], "strength": 2}
    response = client.post("/api/v1/annotations", json=body, headers={**headers, "Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code == 201, response.text
    return response.json()


def _shape(value):
    """The JSON's keys and types, all the way down (what a client could tell tasks apart by)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


def test_gold_is_mixed_in_as_an_ordinary_task_and_its_answer_never_reaches_the_annotator(client, api, settings):
    _, admin = api("admin")
    created = client.post("/api/v1/tasks", json=[gold_line(explanation=SECRET), task_line()], headers=admin)
    assert created.status_code == 201, created.text
    gold_id, regular_id = created.json()["task_ids"]
    settings.gold_rate = 1.0
    user, headers = api()
    gold = client.get("/api/v1/tasks/next", headers=headers)
    assert gold.json()["task_id"] == gold_id
    # the shown order is shuffled per annotator: pick the wrong answer (the line's second response) by its text
    wrong = next(i for i, r in enumerate(gold.json()["responses"]) if r["text"].startswith("response 1 "))
    _submit(client, headers, gold.json(), pick=wrong)
    regular = client.get("/api/v1/tasks/next", headers=headers)
    assert regular.json()["task_id"] == regular_id  # gold used up: the regular queue
    assert _shape(gold.json()) == _shape(regular.json())
    regular_annotation = _submit(client, headers, regular.json(), pick=0)["annotation_id"]
    reachable = [
        gold.text,
        client.get("/api/v1/annotations", headers=headers).text,
        client.get("/api/v1/qualification", headers=headers).text,
    ]
    for text in reachable:
        assert SECRET not in text and "gold" not in text.lower()
    for path in ("/api/v1/gold", "/api/v1/exports/rich", "/api/v1/stats", "/api/v1/gold/qualification"):
        assert client.get(path, headers=headers).status_code == 403, path
    # The admin sees the answer, the grade, and gold accuracy in the stats; exports hold the regular label only.
    listed = client.get("/api/v1/gold", headers=admin).json()
    assert [(g["task_id"], g["annotations"], g["correct"]) for g in listed] == [(gold_id, 1, 0)]
    assert listed[0]["explanation"] == SECRET
    stats = client.get("/api/v1/stats", headers=admin).json()
    figures = stats["gold_accuracy"][user.username]
    assert (figures["count"], figures["correct"], figures["accuracy"], figures["low"]) == (1, 0, 0.0, 0.0)
    assert 0.7 < figures["high"] < 0.8
    for fmt in ("rich", "trl"):
        lines = client.get(f"/api/v1/exports/{fmt}", headers=admin).text.strip().splitlines()
        assert [json.loads(line)["annotation_id"] for line in lines] == [regular_annotation], fmt


def test_admin_marks_replaces_and_unmarks_gold(client, api):
    _, admin = api("admin")
    (task_id,) = client.post("/api/v1/tasks", json=[task_line("ranking")], headers=admin).json()["task_ids"]
    bad = client.put(f"/api/v1/gold/{task_id}", json={"answer": {"choice": "tie"}}, headers=admin)
    assert bad.status_code == 422 and "ranking" in bad.json()["detail"]
    assert client.put("/api/v1/gold/999999", json={"answer": {}}, headers=admin).status_code == 404
    user, headers = api()
    offer = client.get("/api/v1/tasks/next", headers=headers).json()
    ids = [r["id"] for r in offer["responses"]]
    marked = client.put(
        f"/api/v1/gold/{task_id}", json={"answer": {"ranking": ids}, "explanation": "as shown"}, headers=admin
    )
    assert marked.status_code == 200, marked.text
    assert marked.json()["answer"] == {"ranking": ids} and marked.json()["qualification"] is False
    assert client.delete(f"/api/v1/gold/{task_id}", headers=admin).status_code == 204
    assert client.delete(f"/api/v1/gold/{task_id}", headers=admin).status_code == 404
    assert client.get("/api/v1/gold", headers=admin).json() == []


def test_qualification_gate_result_reset_and_allow(client, api, settings):
    settings.qualification_required, settings.qualification_threshold = True, 1.0
    _, admin = api("admin")
    lines = [gold_line(qualification=True, explanation=SECRET), task_line(overlap=3)]
    qualification_id, regular_id = client.post("/api/v1/tasks", json=lines, headers=admin).json()["task_ids"]
    user, headers = api()
    first = client.get("/api/v1/tasks/next", headers=headers).json()
    assert first["task_id"] == qualification_id
    mine = client.get("/api/v1/qualification", headers=headers).json()
    assert (mine["status"], mine["remaining"], mine["items"]) == ("in_progress", 1, [])
    answer = client.get("/api/v1/gold", headers=admin).json()[0]["answer"]["chosen_id"]
    wrong = next(i for i, r in enumerate(first["responses"]) if r["id"] != answer)
    _submit(client, headers, first, pick=wrong)
    refused = client.get("/api/v1/tasks/next", headers=headers)
    assert refused.status_code == 403 and "qualification" in refused.json()["detail"]
    assert "0 of 1 right" in refused.json()["detail"]
    result = client.get("/api/v1/qualification", headers=headers).json()
    assert (result["status"], result["correct"], result["total"]) == ("failed", 0, 1)
    assert result["items"][0]["explanation"] == SECRET and result["items"][0]["right"] is False
    rows = {r["username"]: r for r in client.get("/api/v1/gold/qualification", headers=admin).json()}
    assert rows[user.username]["status"] == "failed"
    # Reset: the set again; allow: real tasks at once.
    assert client.post(f"/api/v1/gold/qualification/{user.id}/reset", headers=admin).status_code == 204
    assert client.get("/api/v1/tasks/next", headers=headers).json()["task_id"] == qualification_id
    other, other_headers = api()
    assert client.post(f"/api/v1/gold/qualification/{other.id}/allow", headers=admin).status_code == 204
    assert client.get("/api/v1/tasks/next", headers=other_headers).json()["task_id"] == regular_id
    assert client.post("/api/v1/gold/qualification/999999/allow", headers=admin).status_code == 404
