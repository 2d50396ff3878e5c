"""/admin/guidelines without JS: save versions (Post/Redirect/Get) for the project and a batch, a refusal keeps the
text, every version stays readable."""

from __future__ import annotations

import re

from app.services.guidelines import list_versions
from tests.factories import make_batch, task_line


def test_admin_saves_versions_for_the_project_and_a_batch_and_reads_old_ones(client, db, make_user, login):
    job, _ = make_batch(db, task_line())
    csrf = login(make_user("admin"))
    page = client.get("/admin/guidelines")
    assert page.status_code == 200 and "none yet" in page.text and f'<option value="{job.id}"' in page.text
    saved = client.post(
        "/admin/guidelines",
        data={"csrf_token": csrf, "job_id": "", "body": "# Rules\r\n\r\nBe **fair**."},
        follow_redirects=False,
    )
    assert saved.status_code == 303 and saved.headers["location"] == "/admin/guidelines?saved=1"
    page = client.get(saved.headers["location"]).text
    assert "Saved as version 1." in page and "<strong>fair</strong>" in page  # the preview, rendered
    unchanged = client.post("/admin/guidelines", data={"csrf_token": csrf, "body": "# Rules\n\nBe **fair**."})
    assert "Nothing to save" in unchanged.text
    client.post("/admin/guidelines", data={"csrf_token": csrf, "body": "# Rules\n\nBe fair and brief."})
    # A batch without its own guidelines starts from the project's text.
    batch_page = client.get(f"/admin/guidelines?job_id={job.id}").text
    assert "tasks show the project" in batch_page and "Be fair and brief." in batch_page
    saved = client.post(
        "/admin/guidelines",
        data={"csrf_token": csrf, "job_id": str(job.id), "body": "Units only."},
        follow_redirects=False,
    )
    assert saved.headers["location"] == f"/admin/guidelines?job_id={job.id}&saved=1"
    old = list_versions(db)[1]
    db.rollback()
    version = client.get(f"/admin/guidelines/versions/{old.id}")
    assert version.status_code == 200 and "version 1" in version.text and "<strong>fair</strong>" in version.text
    assert client.get("/admin/guidelines/versions/987654").status_code == 404


def test_a_refused_save_shows_why_and_keeps_the_text(client, db, make_user, login):
    csrf = login(make_user("admin"))
    refused = client.post("/admin/guidelines", data={"csrf_token": csrf, "body": "Judge \u202e this carefully"})
    assert refused.status_code == 422 and "bidi override" in refused.text
    assert re.search(r'data-testid="guidelines-body">Judge \u202e this carefully</textarea>', refused.text)
    assert client.get("/admin/guidelines?job_id=987654").status_code == 404
    assert client.post("/admin/guidelines", data={"body": "no token"}).status_code == 403
    assert list_versions(db) == []
