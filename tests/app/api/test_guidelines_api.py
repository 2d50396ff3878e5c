"""The guidelines JSON API (app.api.guidelines): admins save versions, everyone reads those in force and old ones;
the next task names its version and the submit records it."""

from __future__ import annotations

from app.models import Annotation
from tests.factories import make_batch, make_tasks, task_line


def test_admins_save_versions_annotators_read_them(client, db, api):
    author, admin = api("admin")
    _, annotator = api()
    job, (batched,) = make_batch(db, task_line())
    assert client.get("/api/v1/guidelines", headers=annotator).status_code == 404  # none written yet
    first = client.put("/api/v1/guidelines", headers=admin, json={"body": "# Rules\n\nBe *fair*."})
    assert first.status_code == 201
    v1 = first.json()
    assert (v1["version"], v1["job_id"], v1["body"]) == (1, None, "# Rules\n\nBe *fair*.")
    assert v1["created_by"] == author.username
    again = client.put("/api/v1/guidelines", headers=admin, json={"body": "# Rules\n\nBe *fair*."})
    assert again.status_code == 200 and again.json()["version_id"] == v1["version_id"]  # nothing new stored
    batch = client.put("/api/v1/guidelines", headers=admin, json={"body": "Units only.", "job_id": job.id}).json()
    assert (batch["version"], batch["job_id"]) == (1, job.id)

    assert client.get("/api/v1/guidelines", headers=annotator).json() == v1
    assert client.get(f"/api/v1/guidelines?task_id={batched}", headers=annotator).json() == batch
    assert client.get(f"/api/v1/guidelines?job_id={job.id}", headers=annotator).json() == batch
    assert client.get(f"/api/v1/guidelines?job_id={job.id}&task_id={batched}", headers=annotator).status_code == 422
    assert client.get("/api/v1/guidelines?task_id=987654", headers=annotator).status_code == 404
    client.put("/api/v1/guidelines", headers=admin, json={"body": "# Rules\n\nBe fair and brief."})
    versions = client.get("/api/v1/guidelines/versions", headers=annotator).json()
    assert [v["version"] for v in versions] == [2, 1] and versions[1] == v1
    assert client.get(f"/api/v1/guidelines/versions?job_id={job.id}", headers=annotator).json() == [batch]
    assert client.get(f"/api/v1/guidelines/versions/{v1['version_id']}", headers=annotator).json() == v1
    assert client.get("/api/v1/guidelines/versions/987654", headers=annotator).status_code == 404


def test_refusals_store_nothing(client, db, api):
    _, admin = api("admin")
    _, annotator = api()
    assert client.put("/api/v1/guidelines", headers=annotator, json={"body": "mine"}).status_code == 403
    assert client.put("/api/v1/guidelines", headers=admin, json={"body": "x", "job_id": 987654}).status_code == 404
    assert client.put("/api/v1/guidelines", headers=admin, json={"body": "a\u0000b"}).status_code == 422
    assert client.put("/api/v1/guidelines", headers=admin, json={"body": "x", "version": 9}).status_code == 422
    assert client.put("/api/v1/guidelines", json={"body": "x"}).status_code == 401
    assert client.get("/api/v1/guidelines/versions", headers=admin).json() == []


def test_the_next_task_names_its_guidelines_and_the_submit_records_them(client, db, api):
    _, admin = api("admin")
    _, annotator = api()
    (task_id,) = make_tasks(db, task_line())
    assert client.get("/api/v1/tasks/next", headers=annotator).json()["guideline_version_id"] is None
    v1 = client.put("/api/v1/guidelines", headers=admin, json={"body": "Rules."}).json()["version_id"]
    client.put("/api/v1/guidelines", headers=admin, json={"body": "Rules, changed."})
    offer = client.get("/api/v1/tasks/next", headers=annotator).json()
    assert offer["task_id"] == task_id and offer["guideline_version_id"] == v1 + 1
    # the annotator was still reading version 1 (fetched before the change): that is what is recorded
    submit = client.post(
        "/api/v1/annotations",
        headers={**annotator, "Idempotency-Key": "k1"},
        json={"task_id": task_id, "choice": "tie", "guideline_version_id": v1},
    )
    assert submit.status_code == 201
    assert db.get(Annotation, submit.json()["annotation_id"]).guideline_version_id == v1
    db.rollback()  # never hold SQLite's write lock while the app works
    listed = client.get("/api/v1/annotations", headers=annotator).json()
    assert listed[0]["guideline_version_id"] == v1
