"""Admin API: prompts, stats, users and tokens, generate, models."""

from sqlalchemy import func, select

from app.models import Job, Prompt
from tests.app.export_fixtures import build_dataset
from tests.app.factories import make_model


def test_post_prompts_json_and_file_all_or_nothing(client, db, api, settings, monkeypatch):
    _, headers = api("admin")
    res = client.post(
        "/api/v1/prompts",
        json=[{"prompt": "a"}, {"prompt": "a"}, {"messages": [{"role": "user", "content": "b"}]}],
        headers=headers,
    )
    assert res.status_code == 200 and res.json() == {"lines": 3, "created": 2, "duplicates": 1}
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


def test_get_stats(client, db, api):
    build_dataset(db)
    _, headers = api("admin")
    stats = client.get("/api/v1/stats", headers=headers).json()
    assert set(stats) == {"counts", "throughput", "agreement", "annotators", "rates"}
    assert stats["agreement"]["pairwise"]["level"] == "nominal" and stats["agreement"]["ranking"]["level"] == "ordinal"
    assert stats["annotators"]["alice"]["position_bias"] == 0.0
    assert client.get("/api/v1/stats", params={"source": "x"}, headers=headers).status_code == 422


def test_users_and_tokens_api(client, db, api):
    admin, headers = api("admin")
    res = client.post("/api/v1/users", json={"username": "ann1", "password": "long-password"}, headers=headers)
    assert res.status_code == 201 and res.json()["role"] == "annotator"
    uid = res.json()["id"]
    assert (
        client.post(
            "/api/v1/users", json={"username": "ann1", "password": "long-password"}, headers=headers
        ).status_code
        == 409
    )
    assert (
        client.post("/api/v1/users", json={"username": "ann2", "password": "short"}, headers=headers).status_code == 422
    )
    tok = client.post(f"/api/v1/users/{uid}/tokens", json={"name": "cli"}, headers=headers)
    assert tok.status_code == 201
    token, tid = tok.json()["token"], tok.json()["id"]
    ann_headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/stats", headers=ann_headers).status_code == 403  # an annotator is not an admin
    listed = client.get(f"/api/v1/users/{uid}/tokens", headers=headers).json()
    assert listed[0]["id"] == tid and "token" not in listed[0] and "token_hash" not in listed[0]
    assert client.delete(f"/api/v1/users/{uid}/tokens/{tid}", headers=headers).status_code == 200
    assert client.get("/api/v1/stats", headers=ann_headers).status_code == 401
    assert (
        client.patch(f"/api/v1/users/{uid}", json={"password": "new-long-password"}, headers=headers).status_code == 200
    )
    res = client.patch(f"/api/v1/users/{uid}", json={"is_active": False}, headers=headers)
    assert res.status_code == 200 and res.json()["is_active"] is False
    assert client.patch(f"/api/v1/users/{admin.id}", json={"is_active": False}, headers=headers).status_code == 422
    assert client.patch("/api/v1/users/9999", json={"is_active": False}, headers=headers).status_code == 404
    assert client.delete(f"/api/v1/users/{uid}/tokens/9999", headers=headers).status_code == 404
    assert [u["username"] for u in client.get("/api/v1/users", headers=headers).json()] == [admin.username, "ann1"]


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
