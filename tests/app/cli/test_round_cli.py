"""`rlhf round start|schedule` and `rlhf label-ai`: the options, --config and --set merged into one round config,
and --wait telling how the job ended."""

from __future__ import annotations

import json

from sqlalchemy import select
from typer.testing import CliRunner

from app.cli import app as cli
from app.models import Job
from tests.factories import labelled_world

runner = CliRunner()


def test_round_start_merges_the_config_file_the_options_and_the_sets(db, tmp_path):
    labelled_world(db, train=3, eval=1)
    config = tmp_path / "round.json"
    config.write_text(json.dumps({"seed": 7, "ppo": {"kl_coef": 0.2, "lr": 1e-5}, "min_pairs": 50}))
    args = ["round", "start", "--config", str(config), "--min-pairs", "3", "--set", "ppo.kl_coef=0.1", "--json"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    assert (job["config"]["seed"], job["config"]["min_pairs"]) == (7, 3)
    assert job["config"]["ppo"] == {"kl_coef": 0.1, "lr": 1e-5}
    assert job["number"] == 1 and f"round 1 queued as job {job['id']}" in result.stderr

    again = runner.invoke(cli, ["round", "start", "--min-pairs", "3"])
    assert again.exit_code == 2 and "one round at a time" in again.output


def test_wait_reports_how_the_job_ended(db, monkeypatch):
    labelled_world(db, train=3, eval=1)
    ended = {"status": "failed", "error": "out of memory", "result": None}
    monkeypatch.setattr("app.cli.round.wait_for", lambda job_id: {"id": job_id, **ended})
    result = runner.invoke(cli, ["round", "start", "--min-pairs", "3", "--wait"])
    assert result.exit_code == 1 and "round" in result.output and "failed: out of memory" in result.output
    db.rollback()
    for job in db.scalars(select(Job)):
        job.status = "cancelled"
    db.commit()
    ended.update(failed_stage="policy", error_summary="the ppo step failed (killed by SIGKILL)")
    result = runner.invoke(cli, ["round", "start", "--min-pairs", "3", "--wait"])
    assert result.output.rstrip().endswith("failed in the policy stage: the ppo step failed (killed by SIGKILL)")
    db.rollback()
    for job in db.scalars(select(Job)):
        job.status = "cancelled"
    db.commit()
    ended.update(status="succeeded", error=None, result={"policy_id": 9})
    result = runner.invoke(cli, ["round", "start", "--min-pairs", "3", "--wait"])
    assert result.exit_code == 0 and '{"policy_id": 9}' in result.output


def test_round_schedule_shows_and_changes_the_schedule(db):
    result = runner.invoke(cli, ["round", "schedule"])
    assert result.exit_code == 0 and "schedule disabled: no trigger set" in result.output
    args = ["round", "schedule", "--enable", "--min-new-annotations", "5", "--set", "algo=dpo", "--json"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["enabled"] and data["min_new_annotations"] == 5 and data["config"]["algo"] == "dpo"
    result = runner.invoke(cli, ["round", "schedule", "--set", "algo=sgd"])
    assert result.exit_code == 2 and "round config: algo" in result.output


def test_round_start_refuses_too_little_data_with_the_count_and_list_shows_the_numbers(db):
    labelled_world(db, train=30, eval=1)
    refused = runner.invoke(cli, ["round", "start"])
    assert refused.exit_code == 2 and "30 preference pair(s)" in refused.output and "at least 100" in refused.output
    assert "--min-pairs" in runner.invoke(cli, ["round", "start", "--help"]).output
    started = runner.invoke(cli, ["round", "start", "--min-pairs", "30", "--algo", "ppo"])
    assert started.exit_code == 0, started.output
    job_id = int(started.stdout)
    listed = runner.invoke(cli, ["round", "list"])
    assert listed.exit_code == 0 and listed.stdout.startswith(f"round 1\tjob {job_id}\tqueued\tppo")
    refused = runner.invoke(cli, ["round", "promote", str(job_id)])
    assert refused.exit_code == 2 and "round 1 is queued: it has no new models to promote" in refused.output


def test_label_ai_wait_prints_the_calibration_per_kind(db, monkeypatch):
    from app.models import ModelVersion

    db.add(ModelVersion(name="rm", kind="reward", stage="rlhf", path="/models/rm", is_current=True, metrics={}))
    db.commit()
    kinds = [
        {"kind": "pairwise", "n": 8, "agreed": 6, "rate": 0.75, "low": 0.41, "high": 0.93},
        {"kind": "ranking", "n": 0, "agreed": 0, "rate": None, "low": None, "high": None},
    ]
    result = {"labelled": 4, "annotator": "ai-rm-rm-1", "calibration": {"tasks": 8, "seed": 3, "kinds": kinds}}
    monkeypatch.setattr(
        "app.cli.round.wait_for", lambda job_id: {"id": job_id, "status": "succeeded", "error": None, "result": result}
    )
    out = runner.invoke(cli, ["label-ai", "--calibration", "8", "--seed", "3", "--wait"])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[1] == "calibration of ai-rm-rm-1 on 8 human-labelled task(s), seed 3:"
    assert lines[2].split() == ["pairwise", "75%", "[41%,", "93%]", "(6/8)"]
    assert "ranking" in lines[3] and "agreement unknown: no human-labelled ranking tasks to compare" in lines[3]
    job = db.get(Job, int(lines[0]))
    assert (job.config["calibration"], job.config["seed"]) == (8, 3)
    refused = runner.invoke(cli, ["label-ai", "--calibration", "-1"])
    assert refused.exit_code == 2


def test_round_start_refuses_untrusted_ai_labels_with_exit_2_unless_allowed(db):
    from app.services.ai_calibration import KindAgreement, store_calibration
    from tests import factories

    labelled_world(db, train=3, eval=1)
    judge = factories.make_annotator(db, "ai-judge", is_ai=True)
    prompts = [factories.make_prompt(db, f"question: what is {a} plus 50? answer:") for a in range(3)]
    factories.label_preferences(db, prompts, annotator=judge, source="ai")
    store_calibration(db, annotator_id=judge.id, judge="lm tiny#1", agreements=[KindAgreement("pairwise", 10, 5)])
    db.commit()
    refused = runner.invoke(cli, ["round", "start", "--min-pairs", "3"])
    assert refused.exit_code == 2
    assert "ai-judge pairwise: agreement 50% [24%, 76%] (5/10) below 70%" in refused.output
    assert "--allow-untrusted-ai" in refused.output
    started = runner.invoke(cli, ["round", "start", "--min-pairs", "3", "--allow-untrusted-ai", "--json"])
    assert started.exit_code == 0, started.output
    assert json.loads(started.stdout)["config"]["allow_untrusted_ai_labels"] is True


def test_round_verdict_queues_the_blind_pairs_or_says_why_not(db):
    from tests.factories import make_job, make_model, make_prompt

    old, new = make_model(db, "sft"), make_model(db, "policy-r1", stage="rlhf")
    round_job = make_job(db, kind="round", status="succeeded")
    round_job.config = {}
    round_job.result = {"policy_id": new.id, "baseline_policy_id": old.id}
    # ids read before the commit: reading one after it would begin a transaction that holds SQLite's write gate
    # while the CLI runs (each call would wait out the gate's timeout)
    round_id, old_id = str(round_job.id), old.id
    db.commit()
    refused = runner.invoke(cli, ["round", "verdict", round_id])
    assert refused.exit_code == 2 and "no eval-split prompts" in refused.output
    make_prompt(db, split="eval")
    db.commit()
    queued = runner.invoke(cli, ["round", "verdict", round_id, "--count", "4"])
    assert queued.exit_code == 0, queued.output
    job = db.get(Job, int(queued.stdout))
    assert job.kind == "generate" and job.config["count"] == 4 and job.config["verdict"]["baseline_id"] == old_id
    db.commit()
    assert runner.invoke(cli, ["round", "verdict", "999999"]).exit_code == 2
