"""`rlhf worker` as real processes: claims, child processes, heartbeats, stale recovery, cancel, SIGTERM, errors.

Job kinds come from tests/app/job_kinds.py (RLHF_JOB_MODULES). Intervals are made small through settings.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.models import Job, JobMetric
from app.services.jobs import enqueue_job, request_cancel
from tests.conftest import BACKENDS
from tests.factories import ROOT, rlhf_command, wait_for


def worker_env(settings, **overrides: str) -> dict[str, str]:
    env = {
        **os.environ,
        "RLHF_DATA_DIR": str(settings.data_dir),
        "RLHF_DATABASE_URL": settings.sqlalchemy_url,
        "RLHF_JOB_MODULES": "tests.app.jobs.job_kinds",
        "PYTHONPATH": str(ROOT),
        "RLHF_WORKER_POLL_S": "0.1",
        "RLHF_HEARTBEAT_S": "0.5",
        "RLHF_STALE_AFTER_S": "30",
        "RLHF_CANCEL_GRACE_S": "2",
    }
    env.update(overrides)
    return env


class Workers:
    """Starts `rlhf worker` processes and makes sure none outlives the test."""

    def __init__(self, settings, tmp_path: Path):
        self.settings = settings
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        log = open(self.tmp_path / f"worker-{len(self.procs)}.log", "wb")
        proc = subprocess.Popen(
            [*rlhf_command(), "worker", *args],
            env=worker_env(self.settings, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.tmp_path,
        )
        log.close()
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def output(self, proc) -> str:
        return Path(proc.log_path).read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(settings, tmp_path):
    pool = Workers(settings, tmp_path)
    yield pool
    pool.stop_all()


def job_row(db, job_id: int) -> Job:
    db.expire_all()
    job = db.get(Job, job_id)
    db.commit()  # end the read transaction: SQLite sessions begin IMMEDIATE and would block the workers
    return job


def enqueue(db, kind: str, **config) -> int:
    max_attempts = config.pop("max_attempts", None)
    job = enqueue_job(db, kind=kind, config=config, max_attempts=max_attempts)
    db.commit()
    return job.id


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def marker_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# ---- concurrency ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_several_workers_never_run_a_job_twice(db, workers, tmp_path):
    markers = tmp_path / "markers"
    ids = [enqueue(db, "test-touch", marker_dir=str(markers), sleep_s=0.05) for _ in range(12)]
    procs = [workers.start() for _ in range(3)]

    def all_done():
        db.expire_all()
        n = db.scalar(select(func.count()).select_from(Job).where(Job.status == "succeeded"))
        db.commit()
        return n == len(ids)

    wait_for(all_done, timeout=120, interval=0.2, what="12 jobs to succeed")
    for job_id in ids:
        job = job_row(db, job_id)
        assert (job.status, job.attempts) == ("succeeded", 1)
        assert len(marker_lines(markers / f"job-{job_id}")) == 1, f"job {job_id} ran more than once"
        assert job.result["pid"] > 0 and job.output_path.endswith(f"jobs/{job_id}")
    assert all(p.poll() is None for p in procs), "a worker died"


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_killed_workers_job_is_recovered_by_another_worker(db, workers, tmp_path):
    markers = tmp_path / "markers"
    job_id = enqueue(db, "test-sleep", marker_dir=str(markers), sleep_s=2)
    stale = {"RLHF_STALE_AFTER_S": "2", "RLHF_HEARTBEAT_S": "0.5"}
    first = workers.start(**stale)
    start_marker = markers / f"start-{job_id}"
    wait_for(lambda: marker_lines(start_marker), timeout=60, what="the job to start")
    child_pid = int(marker_lines(start_marker)[0].split()[0])
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    # the child dies with its worker (PR_SET_PDEATHSIG), so the job cannot run twice at once
    wait_for(lambda: not pid_alive(child_pid), timeout=5, what="the orphaned child to die")
    assert job_row(db, job_id).status == "running"  # nobody knows yet

    second = workers.start(**stale)
    job = wait_for(
        lambda: (j := job_row(db, job_id)).status == "succeeded" and j, timeout=60, what="the job to be recovered"
    )
    assert job.attempts == 2
    assert len(marker_lines(start_marker)) == 2
    assert "stale heartbeat -> queued" in workers.output(second)


# ---- cancel, SIGTERM --------------------------------------------------------------------------------------------


def test_cancel_stops_a_running_job_within_5_seconds(db, workers, tmp_path):
    markers = tmp_path / "markers"
    job_id = enqueue(db, "test-sleep", marker_dir=str(markers), sleep_s=60)
    workers.start()
    start_marker = markers / f"start-{job_id}"
    wait_for(lambda: marker_lines(start_marker), timeout=60, what="the job to start")
    child_pid = int(marker_lines(start_marker)[0].split()[0])

    began = time.monotonic()
    request_cancel(db, job_id=job_id)
    db.commit()
    job = wait_for(
        lambda: (j := job_row(db, job_id)).status == "cancelled" and j, timeout=10, what="the job to be cancelled"
    )
    elapsed = time.monotonic() - began
    assert elapsed < 5, f"cancel took {elapsed:.1f} s"
    assert not pid_alive(child_pid)
    assert job.finished_at is not None and job.error.startswith("cancelled")


def test_cancel_also_stops_the_trainer_the_job_started(db, workers, tmp_path):
    markers = tmp_path / "markers"
    job_id = enqueue(db, "test-trainer", marker_dir=str(markers))
    workers.start()
    trainer_pid_file = markers / f"trainer-{job_id}"
    wait_for(lambda: marker_lines(trainer_pid_file), timeout=60, what="the trainer to start")
    child_pid = int(marker_lines(markers / f"start-{job_id}")[0].split()[0])
    trainer_pid = int(marker_lines(trainer_pid_file)[0])
    wait_for(lambda: job_row(db, job_id).progress_done >= 2, timeout=30, what="the trainer's progress")

    began = time.monotonic()
    request_cancel(db, job_id=job_id)
    db.commit()
    wait_for(lambda: job_row(db, job_id).status == "cancelled", timeout=10, what="the job to be cancelled")
    assert time.monotonic() - began < 5
    assert not pid_alive(child_pid) and not pid_alive(trainer_pid)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_to_the_worker_requeues_its_job(db, workers, tmp_path, signum):
    markers = tmp_path / "markers"
    job_id = enqueue(db, "test-sleep", marker_dir=str(markers), sleep_s=60)
    proc = workers.start()
    start_marker = markers / f"start-{job_id}"
    wait_for(lambda: marker_lines(start_marker), timeout=60, what="the job to start")
    child_pid = int(marker_lines(start_marker)[0].split()[0])

    proc.send_signal(signum)
    assert proc.wait(timeout=10) == 0
    assert not pid_alive(child_pid)
    job = job_row(db, job_id)
    assert (job.status, job.worker_id, job.attempts) == ("queued", None, 0)  # the attempt is not counted


# ---- outcomes -------------------------------------------------------------------------------------------------


def test_failed_jobs_keep_the_last_lines_of_the_error(db, workers):
    raised = enqueue(db, "test-raise", depth=80)
    failed = enqueue(db, "test-fail")
    exited = enqueue(db, "test-exit", code=7)
    unknown = enqueue(db, "no-such-kind")
    proc = workers.start("--max-jobs", "4")
    assert proc.wait(timeout=120) == 0, workers.output(proc)

    job = job_row(db, raised)
    assert job.status == "failed" and job.attempts == 1
    lines = job.error.splitlines()
    assert len(lines) <= 40
    assert lines[-1] == "ValueError: the data was bad on purpose"
    assert "in deep" in job.error

    assert job_row(db, failed).error == "reason shown as is"

    job = job_row(db, exited)
    assert job.status == "failed"
    assert "exit status 7" in job.error and "about to exit hard" in job.error

    job = job_row(db, unknown)
    assert job.status == "failed" and "unknown job kind 'no-such-kind'" in job.error


def test_progress_and_metrics_reach_the_job(db, workers):
    job_id = enqueue(db, "test-progress", steps=4)
    proc = workers.start("--once")
    assert proc.wait(timeout=60) == 0, workers.output(proc)
    job = job_row(db, job_id)
    assert job.status == "succeeded" and job.result == {"steps": 4}
    assert (job.progress_done, job.progress_total, job.progress_message) == (4, 4, "step 4/4")
    assert job.metrics["loss"] == pytest.approx(0.25) and job.metrics["step"] == 4
    points = db.scalars(select(JobMetric).where(JobMetric.job_id == job_id).order_by(JobMetric.id)).all()
    db.commit()
    assert [p.step for p in points] == [1, 2, 3, 4]
    assert points[1].stage == "train" and points[1].values == {"loss": 0.5, "objective/kl": 0.02}


def test_once_exits_on_an_empty_queue_and_runs_periodic_hooks(settings, workers, tmp_path):
    hook_marker = tmp_path / "hook-ran"
    proc = workers.start("--once", RLHF_TEST_HOOK_MARKER=str(hook_marker))
    assert proc.wait(timeout=60) == 0, workers.output(proc)
    assert hook_marker.read_text().strip() == settings.sqlalchemy_url


def test_worker_refuses_an_unmigrated_database(settings, tmp_path):
    env = worker_env(settings, RLHF_DATABASE_URL=f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    result = subprocess.run([*rlhf_command(), "worker", "--once"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "rlhf db upgrade" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_worker_refuses_to_start_without_its_job_kinds(settings):
    env = worker_env(settings, RLHF_JOB_MODULES="tests.app.no_such_kinds_module")
    result = subprocess.run([*rlhf_command(), "worker", "--once"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "cannot load job kinds" in result.stderr and "no_such_kinds_module" in result.stderr


def test_a_failure_that_would_repeat_fails_at_once_and_says_where_and_why(db, workers, settings):
    bad_input = enqueue(db, "test-trainer-fails", exit=2, marker_dir=str(settings.data_dir / "m"), max_attempts=3)
    killed = enqueue(db, "test-trainer-fails", exit="kill", marker_dir=str(settings.data_dir / "m"), max_attempts=2)
    child_killed = enqueue(db, "test-exit", code="kill", marker_dir=str(settings.data_dir / "m"), max_attempts=2)
    proc = workers.start()
    ended = ("failed", "succeeded", "cancelled")
    wait_for(
        lambda: all(job_row(db, j).status in ended for j in (bad_input, killed, child_killed)),
        timeout=90,
        interval=0.2,
        what="both jobs to end",
        on_timeout=lambda: workers.output(proc),
    )

    job = job_row(db, bad_input)  # exit 2 = bad input or config: no retry
    assert (job.status, job.attempts) == ("failed", 1)
    assert job.failed_stage == "train"
    assert job.error_summary == (
        "the fake step failed (exit status 2): data line 3: prompt is 217 tokens, the model takes at most 128"
    )
    assert job.error_log == "logs/fake.stderr.log"
    assert "prompt is 217 tokens" in (Path(job.output_path) / job.error_log).read_text()
    assert len(marker_lines(settings.data_dir / "m" / f"start-{bad_input}")) == 1

    job = job_row(db, killed)  # killed by a signal (the OOM killer): tried again while attempts remain
    assert (job.status, job.attempts) == ("failed", 2)
    assert len(marker_lines(settings.data_dir / "m" / f"start-{killed}")) == 2
    assert job.error_summary == "the fake step failed (killed by SIGKILL)"

    job = job_row(db, child_killed)  # the job's own process killed: the worker gives it another attempt too
    assert (job.status, job.attempts, job.error_log) == ("failed", 2, "job.log")
    assert len(marker_lines(settings.data_dir / "m" / f"start-{child_killed}")) == 2
    assert job.error_summary == "the job process ended: killed by SIGKILL: about to exit hard"
