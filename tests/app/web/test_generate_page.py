"""/admin/generate: the form enqueues a job or shows the reason."""

from sqlalchemy import func, select

from app.models import Job, Prompt
from tests.factories import make_model


def test_generate_form_enqueues_a_job_or_shows_the_reason(client, db, make_user, login):
    make_model(db, "base", is_current=True)
    db.add(Prompt(text="hi", content_hash="h1", tags=[], split="train", meta={}))
    db.commit()
    csrf = login(make_user("admin"))
    page = client.get("/admin/generate").text
    assert 'name="temperature" type="number" step="any" min="0" value="1.0"' in page  # defaults shown
    res = client.post(
        "/admin/generate",
        data={
            "csrf_token": csrf,
            "model_id": "",
            "split": "train",
            "count": "5",
            "num_samples": "4",
            "temperature": "0.7",
            "top_k": "0",
            "top_p": "1",
            "max_new_tokens": "16",
            "seed": "3",
            "task_kind": "ranking",
            "overlap": "2",
            "priority": "0",
            "tag": "",
        },
        follow_redirects=False,
    )
    assert res.status_code == 303 and res.headers["location"].startswith("/admin/jobs/")
    job = db.scalar(select(Job))
    assert job.kind == "generate" and job.config["num_samples"] == 4 and job.config["temperature"] == 0.7
    db.rollback()
    res = client.post("/admin/generate", data={"csrf_token": csrf, "num_samples": "12"})
    assert res.status_code == 422 and "2..8" in res.text
    res = client.post("/admin/generate", data={"csrf_token": csrf, "count": "many"})
    assert res.status_code == 422 and "must be a number" in res.text
    assert db.scalar(select(func.count()).select_from(Job)) == 1


def test_generate_form_takes_a_selection(client, db, make_user, login):
    make_model(db, "base", is_current=True)
    db.add(Prompt(text="hi", content_hash="h1", tags=[], split="train", meta={}))
    db.commit()
    csrf = login(make_user("admin"))
    page = client.get("/admin/generate").text
    assert "<option selected>random</option>" in page and 'name="random_share"' in page
    form = {"csrf_token": csrf, "select": "uncertainty", "oversample": "2", "random_share": "0.5"}
    res = client.post("/admin/generate", data=form)
    assert res.status_code == 422 and "current reward model: there is none yet" in res.text
    make_model(db, "rm", kind="reward", stage="rlhf", is_current=True)
    db.commit()
    res = client.post("/admin/generate", data=form, follow_redirects=False)
    assert res.status_code == 303
    job = db.scalar(select(Job))
    assert (job.config["select"], job.config["oversample"], job.config["random_share"]) == ("uncertainty", 2, 0.5)
