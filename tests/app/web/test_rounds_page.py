"""Rounds page, round report and snapshot download (no training: rounds are queued, or their files written by
hand, so these tests stay fast)."""

from __future__ import annotations

import io
import json
import tarfile

from sqlalchemy import select

from app.models import Job, ModelVersion
from app.services.snapshots import SnapshotFilters, snapshot_dir, write_snapshot
from tests.factories import labelled_world


def _labelled(db, pairs: int = 20):
    return labelled_world(db, train=pairs, eval=2)[0]


def test_rounds_page_shows_defaults_and_starts_a_round_from_the_form(client, login, make_user, db):
    _labelled(db)
    csrf = login(make_user("admin"))
    page = client.get("/admin/rounds")
    assert page.status_code == 200
    assert 'name="ppo.kl_coef"' in page.text and "default 0.05" in page.text  # the round's PPO default, shown
    assert 'name="dpo.beta"' in page.text  # a trainer default comes from the trainer's config
    assert 'value="rs"' in page.text and 'name="rs.num_samples"' in page.text and 'name="sft.lr"' in page.text

    refused = client.post("/admin/rounds", data={"csrf_token": csrf, "algo": "ppo", "min_pairs": "500"})
    assert refused.status_code == 422 and "too little data" in refused.text
    response = client.post(
        "/admin/rounds",
        data={"csrf_token": csrf, "algo": "dpo", "dpo.beta": "0.2", "ppo.kl_coef": "0.05", "seed": ""},
        follow_redirects=False,
    )
    assert response.status_code == 303
    job = db.scalars(select(Job).where(Job.kind == "round")).one()
    assert response.headers["location"] == f"/admin/rounds/{job.id}"
    assert job.config["algo"] == "dpo" and job.config["dpo"] == {"beta": 0.2} and job.config["ppo"] == {}
    job_id = job.id
    db.rollback()  # end the test's read transaction: SQLite's write lock is taken at BEGIN
    busy = client.post("/admin/rounds", data={"csrf_token": csrf, "algo": "ppo"})
    assert busy.status_code == 409 and "one round at a time" in busy.text
    report = client.get(f"/admin/rounds/{job_id}")
    assert report.status_code == 200 and 'hx-trigger="every 2s"' in report.text  # live while queued


def test_schedule_form_saves_and_reports_errors(client, login, make_user, db):
    csrf = login(make_user("admin"))
    bad = client.post("/admin/rounds/schedule", data={"csrf_token": csrf, "enabled": "on", "config": "{}"})
    assert bad.status_code == 422 and "set a trigger first" in bad.text
    ok = client.post(
        "/admin/rounds/schedule",
        data={
            "csrf_token": csrf,
            "enabled": "on",
            "every_minutes": "30",
            "min_new_annotations": "0",
            "config": '{"seed": 3}',
        },
        follow_redirects=False,
    )
    assert ok.status_code == 303
    page = client.get("/admin/rounds")
    assert 'name="every_minutes" type="number" min="0" step="any" value="30.0"' in page.text
    assert "&#34;seed&#34;: 3" in page.text


def test_rounds_pages_are_admin_only(client, login, make_user):
    assert client.get("/admin/rounds", follow_redirects=False).status_code in (303, 307)
    login(make_user("annotator"))
    assert client.get("/admin/rounds").status_code == 403
    assert client.get("/admin/rounds/1/snapshot.tar.gz").status_code == 403


def test_round_report_shows_snapshot_evaluation_warnings_and_samples(client, login, make_user, db, settings):
    policy = _labelled(db, pairs=5)
    job = Job(kind="round", status="succeeded", config={"algo": "ppo", "note": "scheduled: test"}, result={})
    db.add(job)
    db.flush()
    new = ModelVersion(
        name=f"policy-r{job.id}",
        kind="policy",
        stage="rlhf",
        parent_id=policy.id,
        path="/x",
        round_job_id=job.id,
        metrics={},
    )
    db.add(new)
    db.flush()
    job.result = {
        "policy_id": new.id,
        "parent_policy_id": policy.id,
        "reference_id": policy.id,
        "tasks": 3,
        "reward": {"eval_accuracy": 0.875},
        "evaluation": {"rm_win_rate": 0.75, "gold_win_rate": 0.625, "kl_to_ref": 1.5},
        "warnings": ["length growth: mean length 4.0 -> 9.0 tokens (x2.25)"],
        "skipped_too_long": {"reward": 1, "ppo": 2, "evaluate": 0, "generate": 0},
    }
    db.commit()
    rdir = settings.data_dir / "rounds" / str(job.id)
    write_snapshot(db, out=snapshot_dir(settings.data_dir, job.id), filters=SnapshotFilters(), round_id=job.id)
    (rdir / "evaluation.json").write_text(
        json.dumps(
            {
                "prompts": 6,
                "summary": {
                    "rm_win_rate": 0.75,
                    "gold_win_rate": 0.625,
                    "gold_win_rate_se": 0.018,
                    "kl_to_ref": 1.5,
                    "mean_length": 9.0,
                    "mean_length_before": 4.0,
                },
                "warnings": ["length growth: mean length 4.0 -> 9.0 tokens (x2.25)"],
            }
        )
    )
    (rdir / "report_prompts.jsonl").write_text(json.dumps({"prompt_id": 11, "prompt": "what is 2 plus 2?"}) + "\n")
    (rdir / "samples_before.jsonl").write_text(json.dumps({"prompt_id": 11, "text": " five"}) + "\n")
    (rdir / "samples_after.jsonl").write_text(json.dumps({"prompt_id": 11, "text": " four"}) + "\n")

    login(make_user("admin"))
    page = client.get(f"/admin/rounds/{job.id}")
    assert page.status_code == 200
    text = page.text
    assert "hx-trigger" not in text.split('id="round-live"')[1].split(">")[0]  # finished: no more polling
    for expected in (
        "75.0%",
        "62.5%",
        "± 1.8",
        "87.5%",
        "Possible reward hacking",
        "length growth",
        "what is 2 plus 2?",
        "Skipped as too long for the model",
        "reward 1 · ppo 2 · evaluate 0 · generate 0",
        " five",
        " four",
        "trl.jsonl",
        "snapshot.tar.gz",
        f"policy-r{job.id}",
    ):
        assert expected in text, expected
    listing = client.get("/admin/rounds").text
    assert f"/admin/rounds/{job.id}" in listing and "75%" in listing

    archive = client.get(f"/admin/rounds/{job.id}/snapshot.tar.gz")
    assert archive.status_code == 200 and archive.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        assert "snapshot/manifest.json" in tar.getnames()
    trl = client.get(f"/admin/rounds/{job.id}/snapshot/trl.jsonl")
    assert trl.status_code == 200 and len(trl.text.splitlines()) == 5
    assert client.get(f"/admin/rounds/{job.id}/snapshot/..%2Fevaluation.json").status_code == 404
    assert client.get(f"/admin/rounds/{job.id}/snapshot/notes.txt").status_code == 404
    assert client.get("/admin/rounds/999999").status_code == 404
