"""Job pages (list, live detail polling with htmx, plots' data, cancel form) and the /api/v1/jobs endpoints."""

from __future__ import annotations

from datetime import timedelta

from app.jobs import queue
from app.models import Job, JobMetric, utcnow
from app.services.jobs import enqueue_job


def _job(db, *, kind="train", status="queued", **fields) -> Job:
    job = enqueue_job(db, kind=kind, config={"lr": 0.001})
    db.commit()
    if status != "queued":
        queue.claim_next(db, worker_id="w1")
        db.commit()
        db.refresh(job)
        for key, value in fields.items():
            setattr(job, key, value)
        if status != "running":
            job.status, job.finished_at = status, utcnow()
        db.commit()
    return job


def test_api_job_needs_an_admin_token(client, db, api):
    job = _job(db)
    assert client.get(f"/api/v1/jobs/{job.id}").status_code == 401
    assert client.get(f"/api/v1/jobs/{job.id}", headers={"Authorization": "Bearer nope"}).status_code == 401
    _user, annotator = api("annotator")
    assert client.get(f"/api/v1/jobs/{job.id}", headers=annotator).status_code == 403
    assert client.get("/api/v1/jobs", headers=annotator).status_code == 403
    _admin, headers = api("admin")
    assert client.get("/api/v1/jobs/999999", headers=headers).status_code == 404


def test_api_job_shows_status_progress_metrics_error_result(client, db, api):
    _admin, headers = api("admin")
    job = _job(
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

    failed = _job(db, status="failed", error="Traceback...\nValueError: bad")
    body = client.get(f"/api/v1/jobs/{failed.id}", headers=headers).json()
    assert body["status"] == "failed" and body["error"].endswith("ValueError: bad")

    listed = client.get("/api/v1/jobs", params={"status": "failed"}, headers=headers).json()
    assert [j["id"] for j in listed] == [failed.id]
    assert client.get("/api/v1/jobs", params={"status": "bogus"}, headers=headers).status_code == 422


def test_api_cancel_and_metrics(client, db, api):
    _admin, headers = api("admin")
    job = _job(db, status="running")
    db.add_all([JobMetric(job_id=job.id, stage="ppo", step=s, values={"objective/kl": s / 10}) for s in (1, 2, 3)])
    db.commit()
    body = client.get(f"/api/v1/jobs/{job.id}/metrics", headers=headers).json()
    assert [(m["stage"], m["step"]) for m in body["metrics"]] == [("ppo", 1), ("ppo", 2), ("ppo", 3)]
    last = body["metrics"][1]["id"]
    body = client.get(f"/api/v1/jobs/{job.id}/metrics", params={"after": last}, headers=headers).json()
    assert [m["step"] for m in body["metrics"]] == [3]

    body = client.post(f"/api/v1/jobs/{job.id}/cancel", headers=headers).json()
    assert body["status"] == "running" and body["cancel_requested"] is True
    done = _job(db, status="succeeded")
    response = client.post(f"/api/v1/jobs/{done.id}/cancel", headers=headers)
    assert response.status_code == 409 and "already succeeded" in response.json()["detail"]


def test_job_pages_are_for_admins(client, db, make_user, login):
    job = _job(db)
    assert client.get("/admin/jobs", follow_redirects=False).status_code == 303  # to /login
    login(make_user("annotator"))
    assert client.get("/admin/jobs").status_code == 403
    assert client.get(f"/admin/jobs/{job.id}").status_code == 403
    assert client.get(f"/admin/jobs/{job.id}/metrics").status_code == 403


def test_running_job_page_polls_itself_and_stops_when_finished(client, db, make_user, login):
    login(make_user("admin"))
    job = _job(
        db,
        status="running",
        progress_done=5,
        progress_total=20,
        progress_message="sft: step 5/20",
        started_at=utcnow() - timedelta(seconds=10),
    )
    page = client.get(f"/admin/jobs/{job.id}")
    assert page.status_code == 200
    html = page.text
    assert f'hx-get="/admin/jobs/{job.id}"' in html and 'hx-trigger="every 2s"' in html
    assert '<progress value="5.0" max="20.0">' in html and "25.0%" in html and "left" in html
    assert "sft: step 5/20" in html and "Cancel job" in html
    assert "/static/vendor/chartjs/chart.umd.min.js" in html and "/static/js/job_plots.js" in html
    assert "<html" in html

    fragment = client.get(f"/admin/jobs/{job.id}", headers={"HX-Request": "true"}).text
    assert "<html" not in fragment and 'id="job-live"' in fragment and 'hx-trigger="every 2s"' in fragment

    job.status, job.finished_at, job.error = "failed", utcnow(), "Traceback\nRuntimeError: boom"
    db.commit()
    fragment = client.get(f"/admin/jobs/{job.id}", headers={"HX-Request": "true"}).text
    assert 'id="job-live"' in fragment and "hx-trigger" not in fragment  # finished: polling stops
    assert "RuntimeError: boom" in fragment and "Cancel job" not in fragment


def test_metrics_endpoint_for_the_plots(client, db, make_user, login):
    login(make_user("admin"))
    job = _job(db, status="running")
    db.add(JobMetric(job_id=job.id, stage="reward", step=1, values={"loss": 0.7, "accuracy": 0.5}))
    db.commit()
    body = client.get(f"/admin/jobs/{job.id}/metrics").json()
    assert body["finished"] is False and body["metrics"][0]["values"] == {"loss": 0.7, "accuracy": 0.5}
    assert (
        client.get(f"/admin/jobs/{job.id}/metrics", params={"after": body["metrics"][0]["id"]}).json()["metrics"] == []
    )


def test_cancel_form_with_and_without_htmx(client, db, make_user, login):
    csrf = login(make_user("admin"))
    queued = _job(db)
    assert client.post(f"/admin/jobs/{queued.id}/cancel", data={}, follow_redirects=False).status_code == 403
    response = client.post(f"/admin/jobs/{queued.id}/cancel", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/admin/jobs/{queued.id}"
    db.expire_all()
    assert db.get(Job, queued.id).status == "cancelled"
    db.commit()

    running = _job(db, status="running")
    fragment = client.post(
        f"/admin/jobs/{running.id}/cancel", headers={"HX-Request": "true", "X-CSRF-Token": csrf}
    ).text
    assert "cancel requested" in fragment and "<html" not in fragment
    again = client.post(f"/admin/jobs/{queued.id}/cancel", data={"csrf_token": csrf})
    assert again.status_code == 409 and "already cancelled" in again.text


def test_jobs_list_page(client, db, make_user, login):
    login(make_user("admin"))
    done = _job(db, kind="generate", status="succeeded")
    running = _job(db, kind="round", status="running", progress_done=1, progress_total=4)
    html = client.get("/admin/jobs").text
    assert f'href="/admin/jobs/{done.id}"' in html and f'href="/admin/jobs/{running.id}"' in html
    assert 'hx-trigger="every 2s"' in html  # something is running: the table refreshes itself
    html = client.get("/admin/jobs", params={"status": "succeeded"}).text
    assert f'href="/admin/jobs/{done.id}"' in html and f'href="/admin/jobs/{running.id}"' not in html
    assert "hx-trigger" not in html
    assert client.get("/admin/jobs", params={"status": "bogus"}).status_code == 422
