"""The annotations JSON API (app.api.annotations): submit (201, replay 200, 409, 422), list mine, undo, and 32
clients racing through the HTTP app."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import func, select

from app.models import Annotation, Task
from tests.conftest import BACKENDS
from tests.factories import make_annotators, make_tasks, task_line


def _count(db):
    db.expire_all()
    return db.scalar(select(func.count()).select_from(Annotation))


def test_api_submit_201_replay_200_conflict_409_invalid_422(client, db, api):
    (task_id,) = make_tasks(db, task_line(overlap=2))
    _, headers = api()
    offer = client.get("/api/v1/tasks/next", headers=headers).json()
    ids = [r["id"] for r in offer["responses"]]
    body = {"task_id": task_id, "choice": "chosen", "chosen_id": ids[1], "strength": 1, "time_spent_ms": 900}
    first = client.post("/api/v1/annotations", headers={**headers, "Idempotency-Key": "abc"}, json=body)
    assert first.status_code == 201, first.text
    replay = client.post("/api/v1/annotations", headers={**headers, "Idempotency-Key": "abc"}, json=body)
    assert replay.status_code == 200 and replay.json() == first.json()
    conflict = client.post(
        "/api/v1/annotations", headers={**headers, "Idempotency-Key": "abc"}, json={**body, "strength": 3}
    )
    assert conflict.status_code == 409 and "different body" in conflict.json()["detail"]
    assert client.post("/api/v1/annotations", headers=headers, json=body).status_code == 422  # no key
    invalid = client.post(
        "/api/v1/annotations", headers={**headers, "Idempotency-Key": "k2"}, json={"task_id": task_id, "ranking": ids}
    )
    assert invalid.status_code == 422
    unknown = client.post(
        "/api/v1/annotations", headers={**headers, "Idempotency-Key": "k3"}, json={**body, "colour": "blue"}
    )
    assert unknown.status_code == 422
    assert _count(db) == 1


def test_api_list_mine_and_undo(client, db, api):
    make_tasks(db, task_line(overlap=2), task_line(overlap=2))
    _, mine = api()
    _, theirs = api()
    for headers in (mine, theirs):
        offer = client.get("/api/v1/tasks/next", headers=headers).json()
        created = client.post(
            "/api/v1/annotations",
            headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
            json={"task_id": offer["task_id"], "choice": "both_bad", "rewrite": "better"},
        )
        assert created.status_code == 201
    listed = client.get("/api/v1/annotations?mine=1", headers=mine).json()
    assert len(listed) == 1 and listed[0]["choice"] == "both_bad" and listed[0]["rewrite"] == "better"
    assert client.get("/api/v1/annotations?mine=0", headers=mine).status_code == 400
    annotation_id = listed[0]["annotation_id"]
    assert client.delete(f"/api/v1/annotations/{annotation_id}", headers=theirs).status_code == 404
    undone = client.delete(f"/api/v1/annotations/{annotation_id}", headers=mine)
    assert undone.status_code == 200 and undone.json()["deleted_at"]
    assert client.delete(f"/api/v1/annotations/{annotation_id}", headers=mine).status_code == 409
    assert client.get("/api/v1/annotations?mine=1", headers=mine).json()[0]["deleted_at"]
    assert client.get("/api/v1/tasks/next", headers=mine).json()["task_id"] == listed[0]["task_id"]


@pytest.mark.postgres
@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_32_api_clients_in_threads_hold_overlap_and_lose_nothing(backend, client, db, make_token):
    """The same race through the HTTP app (routes, auth, SQLite writer gate), 32 threads at once."""
    overlaps = [1, 2, 3] * 4
    task_ids = make_tasks(db, *[task_line(overlap=o) for o in overlaps])
    headers = [{"Authorization": f"Bearer {make_token(u)}"} for u in make_annotators(db, 32)]
    acked, errors = [], []
    barrier = threading.Barrier(32)

    def annotator(h):
        barrier.wait()
        while True:
            r = client.get("/api/v1/tasks/next", headers=h)
            if r.status_code == 204:
                return
            if r.status_code != 200:
                errors.append(r.text)
                return
            task = r.json()
            s = client.post(
                "/api/v1/annotations",
                headers={**h, "Idempotency-Key": uuid.uuid4().hex},
                json={"task_id": task["task_id"], "choice": "tie"},
            )
            if s.status_code == 201:
                acked.append(s.json()["annotation_id"])
            elif s.status_code != 409:
                errors.append(s.text)

    threads = [threading.Thread(target=annotator, args=(h,)) for h in headers]
    [t.start() for t in threads]
    [t.join(120) for t in threads]
    assert not errors, errors[:3]
    db.expire_all()
    stored = db.execute(select(Annotation.id, Annotation.task_id)).all()
    assert sorted(acked) == sorted(i for i, _ in stored) and len(acked) == sum(overlaps)
    for task_id, overlap in zip(task_ids, overlaps):
        assert sum(1 for _, t in stored if t == task_id) == overlap == db.get(Task, task_id).done_count


def test_a_submit_for_a_task_not_leased_to_me_is_409_and_names_nothing_of_it(client, db, api):
    """The assignment is checked before the feedback: a wrong answer for someone else's task says neither its kind
    nor its response ids."""
    (task_id,) = make_tasks(db, task_line(kind="ranking", responses=["a", "b", "c"]))
    _, holder = api()
    offer = client.get("/api/v1/tasks/next", headers=holder).json()
    _, other = api()
    for url in ("/api/v1/annotations", "/api/v1/annotations?via=route"):
        refused = client.post(
            url,
            headers={**other, "Idempotency-Key": uuid.uuid4().hex},
            json={"task_id": task_id, "choice": "tie"},
        )
        assert refused.status_code == 409, refused.text
        assert refused.json() == {"detail": f"task {task_id} is not assigned to you: ask for the next task first"}
    assert offer["kind"] == "ranking"
    assert _count(db) == 0


def test_replaying_a_submit_after_its_undo_is_409(client, db, api):
    make_tasks(db, task_line(overlap=1))
    _, headers = api()
    offer = client.get("/api/v1/tasks/next", headers=headers).json()
    keyed = {**headers, "Idempotency-Key": "once"}
    body = {"task_id": offer["task_id"], "choice": "tie"}
    first = client.post("/api/v1/annotations", headers=keyed, json=body)
    assert first.status_code == 201
    assert client.delete(f"/api/v1/annotations/{first.json()['annotation_id']}", headers=headers).status_code == 200
    for url in ("/api/v1/annotations", "/api/v1/annotations?via=route"):
        replay = client.post(url, headers=keyed, json=body)
        assert replay.status_code == 409 and "was undone" in replay.json()["detail"], replay.text
    again = client.post("/api/v1/annotations", headers={**headers, "Idempotency-Key": "fresh"}, json=body)
    assert again.status_code == 201 and again.json()["annotation_id"] != first.json()["annotation_id"]


def test_a_key_used_on_another_task_is_409_without_checking_the_new_task(client, db, api):
    make_tasks(db, task_line(overlap=1), task_line(kind="rating", responses=["x"], overlap=1))
    _, headers = api()
    offer = client.get("/api/v1/tasks/next", headers=headers).json()
    keyed = {**headers, "Idempotency-Key": "k"}
    assert client.post("/api/v1/annotations", headers=keyed, json={"task_id": offer["task_id"], "choice": "tie"})
    other = client.post("/api/v1/annotations", headers=keyed, json={"task_id": offer["task_id"] + 1, "choice": "tie"})
    assert other.status_code == 409 and "different body" in other.json()["detail"]
    assert "rating" not in other.json()["detail"]
