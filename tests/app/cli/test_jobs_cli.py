"""`rlhf jobs list|show|cancel` (with --json on list and show)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from app.cli import app as cli
from app.jobs import queue
from app.models import Job
from app.services.jobs import enqueue_job

runner = CliRunner()


def _enqueue(db, kind="generate", **config) -> int:
    job = enqueue_job(db, kind=kind, config=config)
    db.commit()
    return job.id


def test_list_and_show_json(db):
    first = _enqueue(db, n=1)
    second = _enqueue(db, kind="round", n=2)
    result = runner.invoke(cli, ["jobs", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["id"], r["kind"], r["status"]) for r in rows] == [
        (second, "round", "queued"),
        (first, "generate", "queued"),
    ]

    result = runner.invoke(cli, ["jobs", "list", "--json", "--kind", "round"])
    assert [r["id"] for r in json.loads(result.stdout)] == [second]

    result = runner.invoke(cli, ["jobs", "show", str(first), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["config"] == {"n": 1} and data["progress"]["total"] == 0 and data["error"] is None

    text = runner.invoke(cli, ["jobs", "show", str(first)]).stdout
    assert f"job {first}  generate  queued" in text
    text = runner.invoke(cli, ["jobs", "list"]).stdout
    assert "round" in text and "generate" in text


def test_show_unknown_job_and_bad_status_exit_2(db):
    result = runner.invoke(cli, ["jobs", "show", "424242"])
    assert result.exit_code == 2 and "no job 424242" in result.output
    result = runner.invoke(cli, ["jobs", "list", "--status", "bogus"])
    assert result.exit_code == 2 and "status must be one of" in result.output
    result = runner.invoke(cli, ["jobs", "show", "not-a-number"])
    assert result.exit_code == 2


def test_cancel_queued_running_and_finished(db):
    queued = _enqueue(db)
    result = runner.invoke(cli, ["jobs", "cancel", str(queued)])
    assert result.exit_code == 0 and f"job {queued}: cancelled" in result.output
    running = _enqueue(db)
    queue.claim_next(db, worker_id="w1")
    db.commit()
    result = runner.invoke(cli, ["jobs", "cancel", str(running)])
    assert result.exit_code == 0 and "cancel requested" in result.output
    db.expire_all()
    assert db.get(Job, running).cancel_requested is True
    db.commit()
    result = runner.invoke(cli, ["jobs", "cancel", str(queued)])
    assert result.exit_code == 2 and "already cancelled" in result.output


def test_every_jobs_command_has_help():
    for args in (
        ["jobs", "--help"],
        ["jobs", "list", "--help"],
        ["jobs", "show", "--help"],
        ["jobs", "cancel", "--help"],
        ["worker", "--help"],
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, (args, result.output)
    assert "--once" in runner.invoke(cli, ["worker", "--help"]).stdout


def test_show_a_failed_job_says_its_stage_reason_and_log(db, settings):
    from tests.factories import make_job

    job = make_job(
        db,
        status="failed",
        output_path=str(settings.data_dir / "jobs" / "9"),
        error="trainer dpo failed (exit status 2):\nerror: data: no pairs",
        failed_stage="policy",
        error_summary="the dpo step failed (exit status 2): data: no pairs",
        error_log="logs/dpo.stderr.log",
    )
    result = runner.invoke(cli, ["jobs", "show", str(job.id)])
    assert result.exit_code == 0, result.output
    assert "failed in  policy" in result.stdout
    assert "reason     the dpo step failed (exit status 2): data: no pairs" in result.stdout
    assert f"jobs/9/logs/dpo.stderr.log  (web: /admin/jobs/{job.id}/log)" in result.stdout
    data = json.loads(runner.invoke(cli, ["jobs", "show", str(job.id), "--json"]).stdout)
    assert data["failed_stage"] == "policy" and data["log_url"] == f"/admin/jobs/{job.id}/log"
