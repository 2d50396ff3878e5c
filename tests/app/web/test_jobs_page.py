"""Job pages: list, live detail polling with htmx, the plots' data, the cancel form."""

from __future__ import annotations

from datetime import timedelta

from app.models import Job, JobMetric, utcnow
from tests.factories import make_job


def test_job_pages_are_for_admins(client, db, make_user, login):
    job = make_job(db)
    assert client.get("/admin/jobs", follow_redirects=False).status_code == 303  # to /login
    login(make_user("annotator"))
    assert client.get("/admin/jobs").status_code == 403
    assert client.get(f"/admin/jobs/{job.id}").status_code == 403
    assert client.get(f"/admin/jobs/{job.id}/metrics").status_code == 403


def test_running_job_page_polls_itself_and_stops_when_finished(client, db, make_user, login):
    login(make_user("admin"))
    job = make_job(
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
    job = make_job(db, status="running")
    db.add(JobMetric(job_id=job.id, stage="reward", step=1, values={"loss": 0.7, "accuracy": 0.5}))
    db.commit()
    body = client.get(f"/admin/jobs/{job.id}/metrics").json()
    assert body["finished"] is False and body["metrics"][0]["values"] == {"loss": 0.7, "accuracy": 0.5}
    assert (
        client.get(f"/admin/jobs/{job.id}/metrics", params={"after": body["metrics"][0]["id"]}).json()["metrics"] == []
    )


def test_cancel_form_with_and_without_htmx(client, db, make_user, login):
    csrf = login(make_user("admin"))
    queued = make_job(db)
    assert client.post(f"/admin/jobs/{queued.id}/cancel", data={}, follow_redirects=False).status_code == 403
    response = client.post(f"/admin/jobs/{queued.id}/cancel", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/admin/jobs/{queued.id}"
    db.expire_all()
    assert db.get(Job, queued.id).status == "cancelled"
    db.commit()

    running = make_job(db, status="running")
    fragment = client.post(
        f"/admin/jobs/{running.id}/cancel", headers={"HX-Request": "true", "X-CSRF-Token": csrf}
    ).text
    assert "cancel requested" in fragment and "<html" not in fragment
    again = client.post(f"/admin/jobs/{queued.id}/cancel", data={"csrf_token": csrf})
    assert again.status_code == 409 and "already cancelled" in again.text


def test_jobs_list_page(client, db, make_user, login):
    login(make_user("admin"))
    done = make_job(db, kind="generate", status="succeeded")
    running = make_job(db, kind="round", status="running", progress_done=1, progress_total=4)
    html = client.get("/admin/jobs").text
    assert f'href="/admin/jobs/{done.id}"' in html and f'href="/admin/jobs/{running.id}"' in html
    assert 'hx-trigger="every 2s"' in html  # something is running: the table refreshes itself
    html = client.get("/admin/jobs", params={"status": "succeeded"}).text
    assert f'href="/admin/jobs/{done.id}"' in html and f'href="/admin/jobs/{running.id}"' not in html
    assert "hx-trigger" not in html
    assert client.get("/admin/jobs", params={"status": "bogus"}).status_code == 422


def test_the_job_page_shows_how_many_processes_each_training_stage_runs_on(client, db, make_user, login):
    login(make_user("admin"))
    assert "Training processes" not in client.get(f"/admin/jobs/{make_job(db).id}").text  # trains nothing yet
    html = client.get(f"/admin/jobs/{make_job(db, status='running', train_processes=2).id}").text
    assert "<dt>Training processes</dt><dd>2 per stage</dd>" in html
