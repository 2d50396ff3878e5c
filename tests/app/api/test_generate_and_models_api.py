"""POST /api/v1/generate and the model registry API (/api/v1/models)."""

from sqlalchemy import func, select

from app.models import Job, Prompt
from tests.factories import make_model


def test_generate_and_models_api(client, db, api):
    _, headers = api("admin")
    assert client.post("/api/v1/generate", json={}, headers=headers).status_code == 422  # no policy yet
    a = make_model(db, "base", is_current=True)
    b = make_model(db, "sft-1")
    db.add(Prompt(text="hi", content_hash="h1", tags=["t"], split="train", meta={}))
    db.commit()
    a_id, b_id = a.id, b.id
    res = client.post("/api/v1/generate", json={"num_samples": 4, "seed": 9, "task_kind": "ranking"}, headers=headers)
    assert res.status_code == 202 and res.json()["config"]["model_id"] == a_id
    assert client.post("/api/v1/generate", json={"num_samples": 3}, headers=headers).status_code == 422
    assert client.get("/api/v1/generate/defaults", headers=headers).json()["num_samples"] == 2
    assert db.scalar(select(func.count()).select_from(Job)) == 1
    db.rollback()
    assert client.post(f"/api/v1/models/{b_id}/promote", headers=headers).json()["current"] is True
    assert [m["current"] for m in client.get("/api/v1/models", headers=headers).json()] == [False, True]
    assert client.post("/api/v1/models/rollback", headers=headers).json()["id"] == a_id
    res = client.post("/api/v1/models", json={"path": "/nonexistent", "name": "x", "kind": "policy"}, headers=headers)
    assert res.status_code == 422 and "not a directory" in res.json()["detail"]
