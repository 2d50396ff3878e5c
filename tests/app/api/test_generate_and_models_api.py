"""POST /api/v1/generate and the model registry API (/api/v1/models)."""

import pytest
from sqlalchemy import func, select

from app.models import Job, Prompt
from tests.conftest import BACKENDS
from tests.factories import make_model, transaction_held


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


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_registering_a_model_holds_no_transaction_during_the_load_check(client, db, api, db_url, monkeypatch, tmp_path):
    """The load check takes seconds (a subprocess loads the model): before, the admin's token lookup and the
    parent's lookup kept their transaction open across it (on SQLite the writer gate: every annotator waited)."""
    import time

    from app.services import models_registry

    _, headers = api("admin")
    parent = make_model(db, "base", is_current=True)
    db.commit()
    held_during_check: list[bool] = []

    def slow_check(*, path, kind) -> None:
        time.sleep(0.5)  # longer than transaction_held's "more than a moment"
        held_during_check.append(transaction_held(db_url))

    monkeypatch.setattr(models_registry, "check_loads", slow_check)
    body = {"path": str(tmp_path), "name": "sft-2", "kind": "policy", "stage": "sft", "parent_id": parent.id}
    res = client.post("/api/v1/models", json=body, headers=headers)
    assert res.status_code == 201 and res.json()["parent_id"] == parent.id, res.text
    assert held_during_check == [False]
    missing = client.post("/api/v1/models", json={**body, "parent_id": parent.id + 100}, headers=headers)
    assert missing.status_code == 404 and "parent" in missing.json()["detail"]


def test_generate_api_takes_a_selection_and_refuses_one_it_cannot_make(client, db, api):
    _, headers = api("admin")
    make_model(db, "base", is_current=True)
    db.add(Prompt(text="hi", content_hash="h1", tags=[], split="train", meta={}))
    db.commit()
    body = {"select": "uncertainty", "oversample": 3, "random_share": 0.25}
    res = client.post("/api/v1/generate", json=body, headers=headers)
    assert res.status_code == 422 and "there is none yet" in res.json()["detail"]
    reward = make_model(db, "rm-1", kind="reward", stage="rlhf", is_current=True)
    db.commit()
    res = client.post("/api/v1/generate", json=body, headers=headers)
    assert res.status_code == 202, res.text
    config = res.json()["config"]
    assert (config["select"], config["oversample"], config["random_share"]) == ("uncertainty", 3, 0.25)
    assert config["reward_model_ids"] == [reward.id]
    res = client.post("/api/v1/generate", json={"select": "disagreement"}, headers=headers)
    assert res.status_code == 422 and "1 registered, at least 2 needed" in res.json()["detail"]
    assert client.post("/api/v1/generate", json={"select": "greedy"}, headers=headers).status_code == 422
    assert client.get("/api/v1/generate/defaults", headers=headers).json()["random_share"] == 0.2
