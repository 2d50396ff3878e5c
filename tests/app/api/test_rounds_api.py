"""The rounds API: start a round (a typed RoundConfig body), list rounds, the schedule, label-ai (no training:
rounds are only queued, so these tests stay fast)."""

from __future__ import annotations

from tests.factories import labelled_world


def _labelled(db, pairs: int = 20):
    return labelled_world(db, train=pairs, eval=2)[0]


def test_api_start_round_is_admin_only_and_refuses_clearly(client, api, db):
    _, annotator = api("annotator")
    _, admin = api("admin")
    assert client.post("/api/v1/rounds", json={}).status_code == 401
    assert client.post("/api/v1/rounds", json={}, headers=annotator).status_code == 403

    response = client.post("/api/v1/rounds", json={}, headers=admin)
    assert response.status_code == 422 and "no current policy" in response.json()["detail"]
    _labelled(db, pairs=4)
    response = client.post("/api/v1/rounds", json={}, headers=admin)
    assert response.status_code == 422
    assert "too little data for a round: 4 preference pair(s)" in response.json()["detail"]
    assert "at least 100 needed" in response.json()["detail"]  # the default minimum, named in the message
    response = client.post("/api/v1/rounds", json={"algo": "ppo", "ppo": {"kl_coef": "much"}}, headers=admin)
    assert response.status_code == 422 and "kl-coef" in response.json()["detail"]

    response = client.post("/api/v1/rounds", json={"min_pairs": 4, "annotator_weighting": "gold"}, headers=admin)
    assert response.status_code == 409 and "no gold tasks answered" in response.json()["detail"]

    response = client.post("/api/v1/rounds", json={"min_pairs": 4, "ppo": {"kl_coef": 0.1}}, headers=admin)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["kind"] == "round" and job["status"] == "queued" and job["config"]["ppo"] == {"kl_coef": 0.1}
    assert job["number"] == 1
    assert client.get(f"/api/v1/jobs/{job['id']}", headers=admin).json()["status"] == "queued"

    again = client.post("/api/v1/rounds", json={"min_pairs": 4}, headers=admin)
    assert again.status_code == 409 and f"round {job['id']} is already queued" in again.json()["detail"]
    listed = client.get("/api/v1/rounds", headers=admin).json()
    assert [(r["id"], r["number"]) for r in listed] == [(job["id"], 1)]


def test_api_promotes_a_held_back_round_by_hand(client, api, db):
    from app.models import Job, ModelVersion

    _, admin = api("admin")
    sft = _labelled(db, pairs=2)
    job = Job(kind="round", status="succeeded", config={}, round_number=1, result={})
    db.add(job)
    db.flush()
    policy = ModelVersion(name="policy-r1", kind="policy", stage="rlhf", path="/x", parent_id=sft.id, metrics={})
    db.add(policy)
    db.flush()
    job.result = {"policy_id": policy.id, "promotion": {"promoted": False, "reasons": ["win-rate 50.0% ..."]}}
    db.commit()
    job_id, policy_id = job.id, policy.id
    db.rollback()
    assert client.post(f"/api/v1/rounds/{job_id}/promote", headers=api("annotator")[1]).status_code == 403
    response = client.post(f"/api/v1/rounds/{job_id}/promote", headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["number"] == 1 and body["promotion"]["promoted"] and body["promotion"]["by_hand"]
    db.expire_all()
    assert db.get(ModelVersion, policy_id).is_current
    db.rollback()
    assert client.post("/api/v1/rounds/999999/promote", headers=admin).status_code == 404


def test_api_schedule_get_and_put(client, api):
    _, admin = api("admin")
    assert client.get("/api/v1/rounds/schedule", headers=admin).json()["enabled"] is False
    bad = client.put("/api/v1/rounds/schedule", json={"enabled": True}, headers=admin)
    assert bad.status_code == 422 and "set a trigger first" in bad.json()["detail"]
    bad = client.put("/api/v1/rounds/schedule", json={"config": {"algo": "nope"}}, headers=admin)
    assert bad.status_code == 422 and "algo" in bad.json()["detail"]
    ok = client.put(
        "/api/v1/rounds/schedule",
        json={"enabled": True, "min_new_annotations": 30, "config": {"algo": "dpo"}},
        headers=admin,
    )
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["enabled"] and body["min_new_annotations"] == 30 and body["config"]["algo"] == "dpo"


def test_the_bodies_are_typed_models_shown_in_the_openapi_schema(client, api):
    schema = client.app.openapi()
    bodies = {
        (path, method): op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
        if path in ("/api/v1/rounds", "/api/v1/rounds/schedule", "/api/v1/label-ai") and "requestBody" in op
    }
    assert bodies == {
        ("/api/v1/rounds", "post"): "RoundConfig",
        ("/api/v1/rounds/schedule", "put"): "ScheduleUpdate",
        ("/api/v1/label-ai", "post"): "LabelAIConfig",
    }
    assert schema["components"]["schemas"]["RoundConfig"]["properties"]["algo"]["enum"] == ["ppo", "dpo", "rs"]

    _, admin = api("admin")
    unknown = client.post("/api/v1/rounds", json={"algo": "ppo", "epochs": 3}, headers=admin)
    assert unknown.status_code == 422 and "epochs: Extra inputs are not permitted" in unknown.json()["detail"]
    bad = client.post("/api/v1/rounds", json={"next_tasks": {"k": 3}}, headers=admin)
    assert bad.status_code == 422 and "k must be even" in bad.json()["detail"]
    unknown = client.put("/api/v1/rounds/schedule", json={"every_minute": 5}, headers=admin)
    assert unknown.status_code == 422 and "every_minute" in unknown.json()["detail"]
    bad = client.post("/api/v1/label-ai", json={"judge": "oracle"}, headers=admin)
    assert bad.status_code == 422 and "judge" in bad.json()["detail"]
    missing = client.post("/api/v1/label-ai", json={"model_id": 999999}, headers=admin)
    assert missing.status_code == 404 and "no model 999999" in missing.json()["detail"]


def _ai_judge(db, *, pairs: int = 6):
    """Human preferences and a current policy, plus `pairs` AI preferences by the judge `ai-judge`. Commits."""
    from tests import factories

    labelled_world(db, train=pairs, eval=1)
    judge = factories.make_annotator(db, "ai-judge", is_ai=True)
    prompts = [factories.make_prompt(db, f"question: what is {a} plus 40? answer:") for a in range(pairs)]
    factories.label_preferences(db, prompts, annotator=judge, source="ai")
    db.commit()
    return judge


def _calibrate(db, judge, agreed: int, n: int) -> None:
    from app.services.ai_calibration import KindAgreement, store_calibration

    agreements = [KindAgreement("pairwise", n, agreed), KindAgreement("ranking", 0, 0)]
    store_calibration(db, annotator_id=judge.id, judge="reward_model rm#1", agreements=agreements)
    db.commit()


def test_the_latest_calibration_by_api_and_a_round_refused_with_its_figure(client, api, db):
    _, annotator = api("annotator")
    _, admin = api("admin")
    assert client.get("/api/v1/label-ai/calibration", headers=annotator).status_code == 403
    assert client.get("/api/v1/label-ai/calibration", headers=admin).json() == []  # no judge calibrated: unknown

    judge = _ai_judge(db)
    refused = client.post("/api/v1/rounds", json={"min_pairs": 4}, headers=admin)
    assert refused.status_code == 409 and "ai-judge: never calibrated" in refused.json()["detail"]
    _calibrate(db, judge, 5, 10)
    _calibrate(db, judge, 13, 20)  # the latest counts
    [latest] = client.get("/api/v1/label-ai/calibration", headers=admin).json()
    assert latest["annotator"] == "ai-judge" and latest["threshold"] == 0.7
    pairwise, ranking = latest["kinds"]
    assert (pairwise["n"], pairwise["agreed"], pairwise["rate"], pairwise["trusted"]) == (20, 13, 0.65, False)
    assert pairwise["low"] < 0.65 < pairwise["high"] and pairwise["text"] == "65% [43%, 82%] (13/20)"
    assert ranking["rate"] is None and "agreement unknown" in ranking["text"]
    by_name = client.get("/api/v1/label-ai/calibration?annotator=nobody", headers=admin)
    assert by_name.status_code == 200 and by_name.json() == []
    assert client.get("/api/v1/label-ai/calibration?annotator=ai-judge", headers=admin).json() == [latest]
    nul = client.get("/api/v1/label-ai/calibration?annotator=a%00b", headers=admin)
    assert nul.status_code == 422 and "annotator" in nul.text  # never a username: refused before any query

    refused = client.post("/api/v1/rounds", json={"min_pairs": 4}, headers=admin)
    assert refused.status_code == 409
    assert "agreement 65% [43%, 82%] (13/20) below 70%" in refused.json()["detail"]
    started = client.post("/api/v1/rounds", json={"min_pairs": 4, "allow_untrusted_ai_labels": True}, headers=admin)
    assert started.status_code == 201 and started.json()["config"]["allow_untrusted_ai_labels"] is True

    op = client.app.openapi()["paths"]["/api/v1/label-ai/calibration"]["get"]
    example = op["responses"]["200"]["content"]["application/json"]["examples"]["one judge"]["value"]
    assert example[0]["kinds"][0]["kind"] == "pairwise"
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["items"]["$ref"].endswith("JudgeCalibration")
