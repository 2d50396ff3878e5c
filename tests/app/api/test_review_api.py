"""The review API: the queue, a task's annotations and final labels, and recording a final label (201; 404, 409,
422 with a message); reviewers and admins only; documented with examples in the OpenAPI schema."""

from __future__ import annotations

import json

import pytest

from tests.conftest import BACKENDS
from tests.factories import annotate_pairwise, pairwise_task


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_reviewer_adjudicates_over_the_api(client, db, make_user, api, backend):
    alice, bob = make_user(username="alice"), make_user(username="bob")
    task, gens = pairwise_task(db, overlap=2)
    annotate_pairwise(db, task, alice, chosen=gens[0])
    annotate_pairwise(db, task, bob, chosen=gens[1])
    db.commit()
    task_id, first = task.id, gens[0].id
    db.rollback()
    _, headers = api("reviewer")
    queue = client.get("/api/v1/review/queue", headers=headers)
    assert queue.status_code == 200
    assert [(i["task_id"], i["agreement"], i["adjudicated"]) for i in queue.json()] == [(task_id, 0.0, False)]
    detail = client.get(f"/api/v1/review/{task_id}", headers=headers).json()
    assert sorted(a["annotator"] for a in detail["annotations"]) == ["alice", "bob"] and detail["current"] is None

    post = client.post(
        f"/api/v1/review/{task_id}", json={"choice": "chosen", "chosen_id": first, "note": "A"}, headers=headers
    )
    assert post.status_code == 201, post.text
    assert post.json()["label"] == {"choice": "chosen", "chosen_id": first, "strength": 2}
    again = client.post(f"/api/v1/review/{task_id}", json={"choice": "tie", "note": "on reflection"}, headers=headers)
    detail = client.get(f"/api/v1/review/{task_id}", headers=headers).json()
    assert detail["current"]["id"] == again.json()["id"] and len(detail["history"]) == 2
    assert client.get("/api/v1/review/queue", headers=headers).json() == []
    assert client.get("/api/v1/review/queue", params={"state": "all"}, headers=headers).json()[0]["adjudicated"]

    wrong = client.post(f"/api/v1/review/{task_id}", json={"ranking": [first], "note": "n"}, headers=headers)
    assert wrong.status_code == 422 and "a pairwise label takes" in wrong.json()["detail"]
    assert client.post(f"/api/v1/review/{task_id}", json={"choice": "tie"}, headers=headers).status_code == 422
    missing = client.post("/api/v1/review/999999", json={"choice": "tie", "note": "n"}, headers=headers)
    assert missing.status_code == 404
    assert client.get("/api/v1/review/queue", params={"state": "done"}, headers=headers).status_code == 422
    _, annotator = api("annotator")
    assert client.get("/api/v1/review/queue", headers=annotator).status_code == 403
    # the HTTP export takes the final label (the tie) in place of alice's and bob's choices
    _, admin = api("admin")
    rich = client.get("/api/v1/exports/rich", params={"labels": "adjudicated"}, headers=admin)
    assert rich.status_code == 200, rich.text
    lines = [json.loads(x) for x in rich.text.splitlines()]
    assert [(x["adjudicated"], x["choice"], x["review_note"]) for x in lines] == [(True, "tie", "on reflection")]
    assert len(client.get("/api/v1/exports/rich", headers=admin).text.splitlines()) == 2
    bad = client.get("/api/v1/exports/rich", params={"labels": "final"}, headers=admin)
    assert bad.status_code == 422 and "labels must be one of" in bad.json()["detail"]


def test_the_review_api_is_in_the_schema_with_examples_and_an_admin_makes_reviewers(client, api):
    _, headers = api("admin")
    made = client.post(
        "/api/v1/users", json={"username": "rev1", "role": "reviewer", "password": "password123"}, headers=headers
    )
    assert made.status_code == 201 and made.json()["role"] == "reviewer", made.text
    odd = client.post(
        "/api/v1/users", json={"username": "x", "role": "judge", "password": "password123"}, headers=headers
    )
    assert odd.status_code == 422 and "annotator, reviewer, admin" in odd.json()["detail"]
    schema = client.get("/openapi.json", headers=headers).json()
    paths = schema["paths"]
    assert {"get"} <= set(paths["/api/v1/review/queue"]) and {"get", "post"} <= set(paths["/api/v1/review/{task_id}"])
    components = schema["components"]["schemas"]
    for name in ("AdjudicationIn", "AdjudicationOut", "QueueItemOut", "ReviewTaskOut"):
        assert components[name].get("examples"), name
