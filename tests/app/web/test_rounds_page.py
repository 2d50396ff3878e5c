"""Rounds page, round report and snapshot download (no training: rounds are queued, or their files written by
hand, so these tests stay fast)."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from sqlalchemy import select

from app.models import Job, ModelVersion
from app.services.rounds import RoundConfig
from app.services.rounds.job import STAGES
from app.services.snapshots import SnapshotFilters, snapshot_dir, write_snapshot
from tests.factories import labelled_world


def _labelled(db, pairs: int = 20):
    return labelled_world(db, train=pairs, eval=2)[0]


def test_rounds_page_shows_defaults_and_starts_a_round_from_the_form(client, login, make_user, db):
    _labelled(db)
    csrf = login(make_user("admin"))
    page = client.get("/admin/rounds?algo=ppo")  # the form shows the chosen algorithm's settings only
    assert page.status_code == 200
    assert 'name="ppo.kl_coef"' in page.text and "default 0.05" in page.text  # the round's PPO default, shown

    refused = client.post("/admin/rounds", data={"csrf_token": csrf, "algo": "ppo", "min_pairs": "500"})
    assert refused.status_code == 422 and "too little data" in refused.text
    assert 'name="annotator_weighting"' in page.text and ">dawid_skene<" in page.text
    gold = {"csrf_token": csrf, "algo": "ppo", "min_pairs": "20", "annotator_weighting": "gold"}
    refused = client.post("/admin/rounds", data=gold)
    assert refused.status_code == 409 and "no gold tasks answered" in refused.text  # on the page, not an error page
    response = client.post(
        "/admin/rounds",
        data={
            "csrf_token": csrf,
            "algo": "dpo",
            "dpo.beta": "0.2",
            "ppo.kl_coef": "0.05",
            "seed": "",
            "min_pairs": "20",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    job = db.scalars(select(Job).where(Job.kind == "round")).one()
    assert response.headers["location"] == f"/admin/rounds/{job.id}"
    assert job.config["algo"] == "dpo" and job.config["dpo"] == {"beta": 0.2} and job.config["ppo"] == {}
    assert job.round_number == 1
    job_id = job.id
    db.rollback()  # end the test's read transaction: SQLite's write lock is taken at BEGIN
    busy = client.post("/admin/rounds", data={"csrf_token": csrf, "algo": "ppo", "min_pairs": "20"})
    assert busy.status_code == 409 and "one round at a time" in busy.text
    report = client.get(f"/admin/rounds/{job_id}")
    assert report.status_code == 200 and 'hx-trigger="every 2s"' in report.text  # live while queued
    assert "<h1>Round 1 " in report.text


def test_the_start_form_shows_the_algorithm_first_then_only_its_settings(client, login, make_user, db):
    _labelled(db)
    csrf = login(make_user("admin"))
    default = RoundConfig().algo  # no algorithm asked: the round's default one
    assert f'name="algo" value="{default}"' in client.get("/admin/rounds").text
    page = client.get("/admin/rounds?algo=ppo").text
    form = page.split('id="round-start"')[1]
    assert form.index('href="/admin/rounds?algo=dpo#round-start"') < form.index('name="min_pairs"')  # algorithm first
    assert 'name="ppo.kl_coef"' in form and 'name="dpo.beta"' not in form and 'name="rs.num_samples"' not in form
    # the few settings that matter shown, the rest folded; each with the value the round uses and why
    shown, folded = form.split("<details", 1)
    assert 'name="min_pairs"' in shown and "default 100" in shown and 'name="ppo.cliprange"' in folded
    assert "too few to learn from" in shown  # min_pairs' description
    assert "Policy ratio clip." in folded  # the trainer's help for cliprange

    # no JS: the algorithm's link is a GET that renders the page for it
    dpo = client.get("/admin/rounds?algo=dpo").text.split('id="round-start"')[1]
    assert 'name="dpo.beta"' in dpo and 'name="ppo.kl_coef"' not in dpo and 'name="algo" value="dpo"' in dpo
    # htmx: the same URL answers the start form alone, swapped in place of the old one
    block = client.get("/admin/rounds?algo=rs", headers={"HX-Request": "true"})
    assert block.status_code == 200 and block.text.lstrip().startswith('<section class="card" id="round-start">')
    assert 'name="rs.num_samples"' in block.text and 'name="sft.lr"' in block.text and "<html" not in block.text
    assert client.get("/admin/rounds?algo=sgd").status_code == 422

    refused = client.post("/admin/rounds", data={"csrf_token": csrf, "algo": "dpo"})  # 20 pairs, default minimum
    assert refused.status_code == 422
    assert "20 preference pair(s) from human and AI annotations on train prompts, at least 100 needed" in refused.text
    assert 'name="dpo.beta"' in refused.text  # the form comes back for the algorithm chosen
    assert db.scalars(select(Job)).all() == []  # nothing queued


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
        "flagged_tasks": 1,
        "reward": {"eval_accuracy": 0.875},
        "evaluation": {"rm_win_rate": 0.75, "gold_win_rate": 0.625, "kl_to_ref": 1.5},
        "warnings": ["length growth: mean length 4.0 -> 9.0 tokens (x2.25)"],
        "skipped_too_long": {"reward": 1, "ppo": 2, "evaluate": 0, "generate": 0},
        "peak_memory_mb": {"reward": 812.4, "ppo": 1530.0},
        "rewrites": {"pairs": 4, "used": True},
        "next_tasks_selection": {"select": "uncertainty", "asked": "disagreement", "note": "only one reward model"},
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
                "flagged": [
                    {
                        "prompt_id": "12",
                        "sample": 0,
                        "seed": 3,
                        "prompt": "what is 3 plus 3?",
                        "reasons": ["length_growth", "reward_length"],
                        "rm_margin": 1.25,
                        "repeated_share": 0.0,
                        "after": {"text": " six six six", "tokens": 9, "finished": True, "score": 2.0, "gold": None},
                        "before": {"text": " six", "tokens": 2, "finished": True, "score": 0.75, "gold": None},
                    }
                ],
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
        "1 flagged</strong>, offered first",
        "Flagged samples: possible reward hacking",
        "length_growth, reward_length",
        "reward-model margin 1.250 · 2 → 9 tokens",
        "what is 3 plus 3?",
        " six six six",
        "Skipped as too long for the model",
        "reward 1 · ppo 2 · evaluate 0 · generate 0",
        "Peak memory:",
        "reward 812 MiB · ppo 1530 MiB",
        "4 pairs, counted apart from the choices and rankings · used by the reward model and DPO",
        "selected by uncertainty",
        "only one reward model",
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


def test_a_held_back_round_says_why_and_offers_promotion_by_hand(client, login, make_user, db, settings):
    from app.services.rounds import promotion_verdict
    from app.services.rounds.evaluate import hacking_checks

    sft = _labelled(db, pairs=5)
    job = Job(kind="round", status="succeeded", config={"algo": "ppo"}, round_number=1, result={})
    db.add(job)
    db.flush()
    policy, reward = (
        ModelVersion(name=f"{k}-r{job.id}", kind=k, stage="rlhf", path="/x", parent_id=sft.id, metrics={})
        for k in ("policy", "reward")
    )
    db.add_all([policy, reward])
    db.flush()
    summary = {"rm_win_rate": 0.55, "rm_win_rate_se": 0.05, "kl_to_start": 0.004, "mean_length_before": 4.0,
               "mean_length": 9.0}  # fmt: skip
    evaluation = {"summary": summary, "checks": hacking_checks({"summary": summary}, {})}
    job.result = {
        "policy_id": policy.id,
        "reward_model_id": reward.id,
        "parent_policy_id": sft.id,
        "reference_id": sft.id,
        "tasks": 0,
        "promotion": promotion_verdict(evaluation, RoundConfig()),
    }
    db.commit()
    job_id, policy_id, reward_id = job.id, policy.id, reward.id
    csrf = login(make_user("admin"))

    page = client.get(f"/admin/rounds/{job_id}").text
    section = page.split('id="round-promotion"')[1].split("</section>")[0]
    assert "Not promoted" in section
    assert "win-rate 55.0% against the current policy under the new reward model is not above 60.0%" in section
    assert "length growth: mean length 4.0 -&gt; 9.0 tokens (x2.25)" in section
    assert "this round changed almost nothing: KL 0.0040" in section
    assert section.count(">fail<") == 2 and 'action="/admin/rounds/' + str(job_id) + '/promote"' in section
    listing = client.get("/admin/rounds").text
    assert "held back" in listing and "changed almost nothing" in listing
    polled = client.get("/admin/rounds", headers={"HX-Request": "true"})  # the table's own refresh
    assert polled.status_code == 200 and "held back" in polled.text and ">1</a>" in polled.text

    db.rollback()  # end the test's read transaction: SQLite's write lock is taken at BEGIN
    assert client.post(f"/admin/rounds/{job_id}/promote").status_code == 403  # no CSRF token
    done = client.post(f"/admin/rounds/{job_id}/promote", data={"csrf_token": csrf}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"/admin/rounds/{job_id}"
    db.expire_all()
    assert db.get(ModelVersion, policy_id).is_current and db.get(ModelVersion, reward_id).is_current
    db.rollback()
    section = client.get(f"/admin/rounds/{job_id}").text.split('id="round-promotion"')[1].split("</section>")[0]
    assert "Promoted by hand" in section and "/promote" not in section


def _round_files_up_to(db, settings, job, stage: str) -> None:
    """The files a round has written by the time it is in `stage` (evaluate writes evaluation.json and the
    samples, as the real job does)."""
    reached = STAGES.index(stage) if stage in STAGES else len(STAGES)
    rdir = settings.data_dir / "rounds" / str(job.id)
    if reached > STAGES.index("snapshot"):
        write_snapshot(db, out=snapshot_dir(settings.data_dir, job.id), filters=SnapshotFilters(), round_id=job.id)
    if reached > STAGES.index("evaluate"):
        summary = {"rm_win_rate": 0.5, "rm_win_rate_se": 0.1, "kl_to_ref": 0.2, "mean_length": 3.0}
        (rdir / "evaluation.json").write_text(json.dumps({"prompts": 2, "summary": summary, "warnings": []}))
        (rdir / "report_prompts.jsonl").write_text(json.dumps({"prompt_id": 1, "prompt": "say hi"}) + "\n")
        (rdir / "samples_before.jsonl").write_text(json.dumps({"prompt_id": 1, "text": " hello"}) + "\n")
        (rdir / "samples_after.jsonl").write_text(json.dumps({"prompt_id": 1, "text": " hi there"}) + "\n")


@pytest.mark.parametrize("state", ["queued", *STAGES, "succeeded", "failed"])
def test_polled_round_block_renders_in_every_stage_state(client, login, make_user, db, settings, state):
    """The block htmx polls renders alone (no macro or variable from outside it) from queued to done, and
    carries the snapshot once there is one; a finished round's block stops polling."""
    _labelled(db, pairs=3)
    job = Job(kind="round", status="queued", config={"algo": "dpo"}, result={}, max_attempts=3)
    db.add(job)
    db.commit()
    if state != "queued":
        job.status, job.attempts = ("running" if state in STAGES else state), 1
        stage = state if state in STAGES else "register"
        job.progress_done, job.progress_total, job.progress_message = STAGES.index(stage), len(STAGES), stage
        if state == "succeeded":
            job.result = {"policy_id": None, "tasks": 0, "reward": {"eval_accuracy": 0.75}}
        if state == "failed":
            job.error = "trainer dpo failed (exit status 2):\nerror: data: no pairs"
            job.failed_stage, job.error_log = "policy", "logs/dpo.stderr.log"
            job.error_summary = "the dpo step failed (exit status 2): data: no pairs"
            job.output_path = str(settings.data_dir / "jobs" / str(job.id))
        db.commit()
        _round_files_up_to(db, settings, job, state)
    login(make_user("admin"))

    block = client.get(f"/admin/rounds/{job.id}", headers={"HX-Request": "true"})

    assert block.status_code == 200, block.text
    assert block.text.lstrip().startswith('<div id="round-live"') and "<html" not in block.text
    polls = 'hx-trigger="every 2s"' in block.text.split(">")[0]
    assert polls == (state not in ("succeeded", "failed"))
    has_snapshot = state in ("succeeded", "failed") or STAGES.index(state if state in STAGES else "snapshot") > 0
    assert ("trl.jsonl" in block.text) == has_snapshot
    assert ("Evaluation on 2 eval prompts" in block.text) == (state in ("generate", "register", "succeeded", "failed"))
    if state in ("generate", "register", "succeeded"):
        assert "50.0%" in block.text and " hi there" in block.text
    if state == "failed":  # which stage, the reason in plain words, the stage's log
        assert "Failed in the policy stage</strong>: the dpo step failed (exit status 2): data: no pairs" in block.text
        assert f'href="/admin/jobs/{job.id}/log"' in block.text


def test_the_form_shows_the_stage_lengths_sized_from_the_data_a_round_would_take(client, login, make_user, db):
    from app.services.rounds.config import MIN_POLICY_STEPS

    _labelled(db, pairs=20)
    login(make_user("admin"))
    page = client.get("/admin/rounds?algo=ppo").text
    assert f"sized from the data now: {MIN_POLICY_STEPS} (2 passes over 20 prompts" in page
    dpo = client.get("/admin/rounds?algo=dpo").text
    assert "sized from the data now: 8 (20 preference pairs at 16 a step" in dpo


def test_the_rounds_table_poll_does_not_count_the_data_the_form_is_sized_from(
    client, login, make_user, db, monkeypatch
):
    from app.services.rounds import overview

    _labelled(db)
    login(make_user("admin"))
    counted: list[int] = []
    monkeypatch.setattr(overview, "preference_pairs", lambda *a, **k: counted.append(1) or 0)
    assert client.get("/admin/rounds", headers={"HX-Request": "true"}).status_code == 200  # every 2 s while running
    assert counted == []
    assert client.get("/admin/rounds").status_code == 200 and counted == [1]


def test_the_ai_feedback_card_shows_each_judges_latest_calibration(client, login, make_user, db):
    from app.services.ai_calibration import KindAgreement, store_calibration
    from tests import factories

    csrf = login(make_user("admin"))
    page = client.get("/admin/rounds")
    assert "No AI judge calibrated yet: agreement unknown." in page.text and "70%" in page.text
    assert 'name="calibration"' in page.text and 'name="allow_untrusted_ai_labels"' in page.text
    judge = factories.make_annotator(db, "ai-judge", is_ai=True)
    agreements = [KindAgreement("pairwise", 20, 13), KindAgreement("ranking", 0, 0)]
    store_calibration(db, annotator_id=judge.id, judge="reward_model rm#1", agreements=agreements)
    db.commit()
    page = client.get("/admin/rounds")
    assert "65% [43%, 82%] (13/20) · <strong>below the trusted minimum</strong>" in page.text
    assert "agreement unknown: no human-labelled ranking tasks to compare" in page.text

    db.add(ModelVersion(name="rm", kind="reward", stage="rlhf", path="/models/rm", is_current=True, metrics={}))
    db.commit()
    form = {"csrf_token": csrf, "judge": "reward_model", "limit": "3", "calibration": "20", "seed": "4"}
    started = client.post("/admin/rounds/label-ai", data=form, follow_redirects=False)
    assert started.status_code == 303
    job = db.scalars(select(Job).where(Job.kind == "label-ai")).one()
    assert (job.config["calibration"], job.config["seed"]) == (20, 4)


def test_a_round_on_ai_labels_shows_the_judges_calibration_and_the_override(client, login, make_user, db):
    from app.services.ai_calibration import KindAgreement, store_calibration
    from tests import factories

    _labelled(db, pairs=4)
    judge = factories.make_annotator(db, "ai-judge", is_ai=True)
    prompts = [factories.make_prompt(db, f"question: what is {a} plus 60? answer:") for a in range(4)]
    factories.label_preferences(db, prompts, annotator=judge, source="ai")
    store_calibration(db, annotator_id=judge.id, judge="lm tiny#1", agreements=[KindAgreement("pairwise", 10, 5)])
    db.commit()
    csrf = login(make_user("admin"))
    form = {"csrf_token": csrf, "algo": "dpo", "min_pairs": "4"}
    refused = client.post("/admin/rounds", data=form)
    assert refused.status_code == 409 and "ai-judge pairwise: agreement 50% [24%, 76%] (5/10) below 70%" in refused.text
    started = client.post("/admin/rounds", data={**form, "allow_untrusted_ai_labels": "true"}, follow_redirects=False)
    assert started.status_code == 303, started.text
    report = client.get(started.headers["location"])
    assert 'id="ai-labels"' in report.text and "Started with allow_untrusted_ai_labels" in report.text
    assert "50% [24%, 76%] · <strong>below the trusted minimum</strong>" in report.text and "5/10" in report.text
