"""The /api/v1/jobs endpoints."""

from __future__ import annotations

from datetime import timedelta

from app.models import JobMetric, utcnow
from tests.factories import make_job


def test_api_job_needs_an_admin_token(client, db, api):
    job = make_job(db)
    assert client.get(f"/api/v1/jobs/{job.id}").status_code == 401
    assert client.get(f"/api/v1/jobs/{job.id}", headers={"Authorization": "Bearer nope"}).status_code == 401
    _user, annotator = api("annotator")
    assert client.get(f"/api/v1/jobs/{job.id}", headers=annotator).status_code == 403
    assert client.get("/api/v1/jobs", headers=annotator).status_code == 403
    _admin, headers = api("admin")
    assert client.get("/api/v1/jobs/999999", headers=headers).status_code == 404


def test_api_job_shows_status_progress_metrics_error_result(client, db, api):
    _admin, headers = api("admin")
    job = make_job(
        db,
        status="running",
        progress_done=3,
        progress_total=12,
        progress_message="ppo: step 3/12",
        metrics={"objective/kl": 0.02, "step": 3},
        started_at=utcnow() - timedelta(seconds=30),
    )
    body = client.get(f"/api/v1/jobs/{job.id}", headers=headers).json()
    assert body["status"] == "running" and body["kind"] == "train" and body["attempts"] == 1
    assert body["progress"]["done"] == 3 and body["progress"]["total"] == 12
    assert body["progress"]["fraction"] == 0.25
    assert 80 <= body["progress"]["eta_s"] <= 100  # 30 s for 3 steps -> about 90 s for 9 more
    assert body["metrics"] == {"objective/kl": 0.02, "step": 3}
    assert body["error"] is None and body["result"] == {} and body["config"] == {"lr": 0.001}

    failed = make_job(db, status="failed", error="Traceback...\nValueError: bad")
    body = client.get(f"/api/v1/jobs/{failed.id}", headers=headers).json()
    assert body["status"] == "failed" and body["error"].endswith("ValueError: bad")

    listed = client.get("/api/v1/jobs", params={"status": "failed"}, headers=headers).json()
    assert [j["id"] for j in listed] == [failed.id]
    assert client.get("/api/v1/jobs", params={"status": "bogus"}, headers=headers).status_code == 422


def test_api_cancel_and_metrics(client, db, api):
    _admin, headers = api("admin")
    job = make_job(db, status="running")
    db.add_all([JobMetric(job_id=job.id, stage="ppo", step=s, values={"objective/kl": s / 10}) for s in (1, 2, 3)])
    db.commit()
    body = client.get(f"/api/v1/jobs/{job.id}/metrics", headers=headers).json()
    assert [(m["stage"], m["step"]) for m in body["metrics"]] == [("ppo", 1), ("ppo", 2), ("ppo", 3)]
    last = body["metrics"][1]["id"]
    body = client.get(f"/api/v1/jobs/{job.id}/metrics", params={"after": last}, headers=headers).json()
    assert [m["step"] for m in body["metrics"]] == [3]

    body = client.post(f"/api/v1/jobs/{job.id}/cancel", headers=headers).json()
    assert body["status"] == "running" and body["cancel_requested"] is True
    done = make_job(db, status="succeeded")
    response = client.post(f"/api/v1/jobs/{done.id}/cancel", headers=headers)
    assert response.status_code == 409 and "already succeeded" in response.json()["detail"]


def test_api_failed_job_says_its_stage_reason_and_log_which_admins_can_read(client, db, api, settings, login):
    from pathlib import Path

    out = settings.data_dir / "jobs" / "x"
    (out / "logs").mkdir(parents=True)
    (out / "logs" / "rs.stderr.log").write_text("Traceback ...\nIndexError: index out of range in self\n")
    job = make_job(
        db,
        status="failed",
        output_path=str(out),
        error="trainer rs failed (exit status 1):\nTraceback ...\nIndexError: index out of range in self",
        failed_stage="policy",
        error_summary="the rs step failed (exit status 1): index out of range in self (IndexError)",
        error_log="logs/rs.stderr.log",
    )
    _admin, headers = api("admin")
    body = client.get(f"/api/v1/jobs/{job.id}", headers=headers).json()
    assert body["failed_stage"] == "policy"
    assert body["error_summary"].endswith("index out of range in self (IndexError)")
    assert body["log_url"] == f"/admin/jobs/{job.id}/log"
    assert body["error"].startswith("trainer rs failed")  # kept as it was

    annotator = api("annotator")[0]
    login(annotator)
    assert client.get(body["log_url"]).status_code == 403
    login(_admin)
    log = client.get(body["log_url"])
    assert log.status_code == 200 and "IndexError" in log.text and log.headers["content-type"].startswith("text/plain")

    job.error_log = "../../../secret"  # never outside the job's output dir
    db.commit()
    assert client.get(body["log_url"]).status_code == 404
    assert Path(out).is_dir()


def test_api_job_without_a_failure_has_no_failure_fields(client, db, api):
    _admin, headers = api("admin")
    body = client.get(f"/api/v1/jobs/{make_job(db).id}", headers=headers).json()
    assert (body["failed_stage"], body["error_summary"], body["log_url"]) == (None, None, None)
