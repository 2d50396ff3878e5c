"""GET /api/v1/rounds/{id} with the human verdict, POST /api/v1/rounds/{id}/verdict, GET /api/v1/leaderboard (no
generation runs: the verdict job is only queued, judgements are inserted)."""

from __future__ import annotations

from app.models import Job
from tests.factories import (
    annotate_pairwise,
    make_annotator,
    make_generation,
    make_job,
    make_model,
    make_prompt,
    make_task,
)


def _round(db, new, old):
    job = make_job(db, kind="round", status="succeeded")
    job.config = {"seed": 3}
    job.result = {
        "policy_id": new.id,
        "baseline_policy_id": old.id,
        "evaluation": {"rm_win_rate": 0.7, "rm_win_rate_se": 0.05, "gold_win_rate": 0.6, "gold_win_rate_se": 0.06},
    }
    db.commit()
    return job


def _judged(db, round_job, new, old, winners):
    for winner in winners:
        prompt = make_prompt(db, split="eval")
        gens = {m: make_generation(db, prompt, m.name, model=m) for m in (old, new)}
        task = make_task(db, prompt, list(gens.values()))
        task.verdict_round_id = round_job.id
        annotate_pairwise(db, task, make_annotator(db), chosen=gens[winner])
    db.commit()


def test_a_round_shows_the_human_win_rate_beside_the_reward_model_and_the_gold_judge(client, api, db):
    _, admin = api("admin")
    _, annotator = api("annotator")
    old, new = make_model(db, "sft"), make_model(db, "policy-r1", stage="rlhf")
    round_job = _round(db, new, old)
    _judged(db, round_job, new, old, [new, new, new, old])

    assert client.get(f"/api/v1/rounds/{round_job.id}", headers=annotator).status_code == 403
    body = client.get(f"/api/v1/rounds/{round_job.id}", headers=admin).json()
    assert body["id"] == round_job.id and body["baseline_policy_id"] == old.id
    assert body["evaluation"]["rm_win_rate"] == 0.7 and body["evaluation"]["gold_win_rate"] == 0.6
    human = body["human_verdict"]
    assert (human["comparisons"], human["wins"], human["losses"], human["win_rate"]) == (4, 3, 1, 0.75)
    assert 0.2 < human["low"] < 0.75 < human["high"] <= 1.0
    assert client.get("/api/v1/rounds/999999", headers=admin).status_code == 404
    assert client.get("/api/v1/rounds/schedule", headers=admin).status_code == 200  # not read as a round id

    board = client.get("/api/v1/leaderboard", headers=admin).json()
    assert board["comparisons"] == 4 and [r["name"] for r in board["rows"]] == ["policy-r1", "sft"]
    assert board["rows"][1]["elo"] == 0.0 and board["rows"][0]["low"] < board["rows"][0]["elo"]
    assert client.get("/api/v1/leaderboard", headers=annotator).status_code == 403


def test_post_verdict_queues_the_generate_job_and_refuses_a_second(client, api, db):
    _, admin = api("admin")
    old, new = make_model(db, "sft"), make_model(db, "policy-r1", stage="rlhf")
    round_job = _round(db, new, old)
    response = client.post(f"/api/v1/rounds/{round_job.id}/verdict", json={}, headers=admin)
    assert response.status_code == 422 and "no eval-split prompts" in response.json()["detail"]
    make_prompt(db, split="eval")
    db.commit()
    response = client.post(f"/api/v1/rounds/{round_job.id}/verdict", json={"count": 5}, headers=admin)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["kind"] == "generate" and job["config"]["count"] == 5 and job["config"]["verdict"]["round_id"]
    again = client.post(f"/api/v1/rounds/{round_job.id}/verdict", headers=admin)
    assert again.status_code == 409 and "being generated" in again.json()["detail"]
    detail = client.get(f"/api/v1/rounds/{round_job.id}", headers=admin).json()["human_verdict"]
    assert (detail["job_id"], detail["job_status"], detail["tasks"]) == (job["id"], "queued", 0)
    assert client.post("/api/v1/rounds/999999/verdict", headers=admin).status_code == 404
    assert client.post(f"/api/v1/rounds/{round_job.id}/verdict", json={"count": 0}, headers=admin).status_code == 422
    assert db.get(Job, job["id"]).status == "queued"


def test_an_annotator_gets_a_verdict_task_blind(client, api, db):
    _, annotator = api("annotator")
    old, new = make_model(db, "sft-secret"), make_model(db, "policy-r1-secret", stage="rlhf")
    round_job = _round(db, new, old)
    prompt = make_prompt(db, split="eval")
    task = make_task(
        db, prompt, [make_generation(db, prompt, "one", model=new), make_generation(db, prompt, "two", model=old)]
    )
    task.verdict_round_id = round_job.id
    db.commit()
    offer = client.get("/api/v1/tasks/next", headers=annotator)
    assert offer.status_code == 200 and offer.json()["task_id"] == task.id
    assert all(set(r) == {"id", "text"} for r in offer.json()["responses"])
    assert "secret" not in offer.text and "verdict" not in offer.text  # no model name, no sign it is a verdict
