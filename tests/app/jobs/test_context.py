"""run_trainer: runs a trainer stage as a subprocess, follows its metrics.jsonl, reports failures' last lines."""

from __future__ import annotations

import functools

import pytest
from sqlalchemy import select

from app.jobs import context as job_context
from app.jobs import queue
from app.jobs.context import JobContext, MetricsFollower, run_trainer
from app.jobs.registry import JobFailed
from app.models import Job, JobMetric
from app.services.jobs import enqueue_job, job_to_dict
from app.services.rounds.trainer_steps import run_stage

FAKE = "tests.app.jobs.job_kinds"


def test_follows_metrics_while_the_stage_runs_and_returns_its_stdout(tmp_path):
    out = tmp_path / "runs" / "sft"
    seen = []
    stdout = run_trainer(
        ["--out", str(out), "--steps", "6", "--sleep", "0.15"],
        stage="sft",
        out_dir=out,
        on_metrics=seen.append,
        module=FAKE,
    )
    assert stdout == str(out)
    assert [(m["step"], m["total_steps"]) for m in seen] == [(s, 6) for s in range(1, 7)]
    assert seen[2]["loss"] == pytest.approx(1 / 3)
    assert (out / "metrics.jsonl").exists() and not list(out.parent.glob("sft.tmp-*"))
    assert (tmp_path / "runs" / "sft.stdout.log").read_text().strip() == str(out)


def test_a_stage_too_quick_to_follow_is_read_from_its_output(tmp_path):
    out = tmp_path / "reward"
    seen = []
    run_trainer(
        ["--out", str(out), "--steps", "3"],
        stage="reward",
        out_dir=out,
        on_metrics=seen.append,
        module=FAKE,
        log_dir=tmp_path / "logs",
    )
    assert [m["step"] for m in seen] == [1, 2, 3]


def test_failure_raises_with_the_last_stderr_lines_and_keeps_the_metrics_seen(tmp_path):
    out = tmp_path / "ppo"
    seen = []
    with pytest.raises(JobFailed) as info:
        run_trainer(
            ["--out", str(out), "--steps", "5", "--sleep", "0.3", "--fail"],
            stage="ppo",
            out_dir=out,
            on_metrics=seen.append,
            module=FAKE,
        )
    message = str(info.value)
    assert message.startswith("trainer ppo failed (exit status 3):")
    assert message.endswith("RuntimeError: fake trainer failed at step 2")
    assert "noise line 59" in message and "noise line 5\n" not in message  # only the last lines
    assert len(message.splitlines()) <= 41
    assert [m["step"] for m in seen] == [1, 2]
    assert not out.exists()


def test_the_real_trainer_cli_reports_bad_input(tmp_path):
    with pytest.raises(JobFailed, match=r"exit status 2[\s\S]*missing\.txt: no such file"):
        run_trainer(
            ["tokenizer", "--input", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "tok")],
            stage="tokenizer",
            out_dir=tmp_path / "tok",
        )


def test_follower_ignores_temp_dirs_of_earlier_runs(tmp_path):
    import os
    import time

    old = tmp_path / "sft.tmp-old"
    old.mkdir()
    (old / "metrics.jsonl").write_text('{"step": 99, "total_steps": 99}\n')
    past = time.time() - 3600
    os.utime(old / "metrics.jsonl", (past, past))
    follower = MetricsFollower(out_dir=tmp_path / "sft")
    assert follower.poll() == []
    new = tmp_path / "sft.tmp-new"
    new.mkdir()
    (new / "metrics.jsonl").write_text('{"step": 1, "total_steps": 2}\n{"step": 2, "tot')
    assert [m["step"] for m in follower.poll()] == [1]  # the torn line waits for its end
    with open(new / "metrics.jsonl", "a") as fh:
        fh.write('al_steps": 2}\n')
    assert follower.poll() == [{"step": 2, "total_steps": 2}]
    follower.close()


def test_context_run_trainer_records_job_metrics_and_progress(db, monkeypatch, tmp_path):
    job = enqueue_job(db, kind="sft", config={})
    db.commit()
    queue.claim_next(db, worker_id="w1")
    db.commit()
    monkeypatch.setattr(job_context, "run_trainer", functools.partial(run_trainer, module=FAKE))
    ctx = JobContext(job_id=job.id, worker_id="w1", kind="sft", config={}, output_dir=tmp_path / "job")
    out = ctx.output_dir / "sft"
    assert ctx.run_trainer(["--out", str(out), "--steps", "4", "--sleep", "0.05"], stage="sft", out_dir=out) == str(out)
    db.expire_all()
    row = db.get(Job, job.id)
    assert (row.progress_done, row.progress_total, row.progress_message) == (4, 4, "sft: step 4/4")
    assert row.metrics == {"loss": 0.25, "stage": "sft", "step": 4}
    points = db.scalars(select(JobMetric).where(JobMetric.job_id == job.id).order_by(JobMetric.id)).all()
    assert [(p.stage, p.step, p.values) for p in points][:2] == [("sft", 1, {"loss": 1.0}), ("sft", 2, {"loss": 0.5})]
    assert (ctx.output_dir / "logs" / "sft.stderr.log").exists()
    db.commit()

    # a context whose job was taken away (swept, finished elsewhere) stops at its next write
    queue.finish(db, job_id=job.id, worker_id="w1", status="failed", error="x")
    db.commit()
    with pytest.raises(job_context.JobLost):
        ctx.progress(1, 2)


def test_progress_calls_are_throttled_but_the_last_one_is_kept(db, tmp_path):
    job = enqueue_job(db, kind="generate", config={})
    db.commit()
    queue.claim_next(db, worker_id="w1")
    db.commit()
    ctx = JobContext(job_id=job.id, worker_id="w1", kind="generate", config={}, output_dir=tmp_path)

    def stored():
        db.expire_all()
        row = db.get(Job, job.id)
        db.commit()
        return row.progress_done, row.progress_total, row.progress_message

    ctx.progress(1, 100, "generating")
    ctx.progress(2, 100, "generating")  # within PROGRESS_MIN_INTERVAL_S: dropped
    assert stored() == (1, 100, "generating")
    ctx.progress(3, 100, "scoring")  # a new message is always stored
    assert stored() == (3, 100, "scoring")
    ctx.progress(100, 100, "scoring")  # so is the end
    assert stored() == (100, 100, "scoring")


def test_a_stage_on_several_processes_runs_under_torchrun(tmp_path):
    out = tmp_path / "ranks"
    run_trainer(["--out", str(out)], stage="reward", processes=2, module="tests.app.jobs.rank_probe", log_dir=tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl", "rank-0-of-2", "rank-1-of-2"]
    run_trainer(["--out", str(tmp_path / "one")], stage="reward", module="tests.app.jobs.rank_probe", log_dir=tmp_path)
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["metrics.jsonl", "rank---of--"]  # no torchrun


def test_the_number_of_training_processes_is_recorded_on_the_job_and_used(db, monkeypatch, tmp_path):
    job = enqueue_job(db, kind="round", config={})
    db.commit()
    queue.claim_next(db, worker_id="w1")
    db.commit()
    ctx = JobContext(job_id=job.id, worker_id="w1", kind="round", config={}, output_dir=tmp_path)
    assert ctx.train_processes == 1
    ctx.set_train_processes(2)
    assert ctx.train_processes == 2
    db.expire_all()
    assert job_to_dict(db.get(Job, job.id))["train_processes"] == 2
    db.commit()

    # a round's trainer step runs on them
    monkeypatch.setattr(job_context, "run_trainer", functools.partial(run_trainer, module="tests.app.jobs.rank_probe"))
    out = tmp_path / "reward"
    run_stage(ctx, stage="reward", trainer_stage="reward", out=out, flags={"out": str(out)})
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl", "rank-0-of-2", "rank-1-of-2"]
