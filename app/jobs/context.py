"""What a job kind's function gets: `JobContext` (config, output dir, DB session, progress, metrics, trainer
runs), and `run_trainer`, which runs `python -m trainer ...` and follows its metrics.jsonl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db import get_read_sessionmaker, session_scope
from app.jobs.failures import error_summary, will_repeat
from app.jobs.processes import describe_exit, spawn_child
from app.jobs.queue import tail_lines
from app.jobs.registry import JobFailed
from app.models import Job, JobMetric

MetricsCallback = Callable[[dict[str, Any]], None]
TRAINER_POLL_S = 0.25
PROGRESS_MIN_INTERVAL_S = 0.5


class JobLost(Exception):
    """This child's job was taken from it (swept as stale, or cancelled): stop without writing anything."""


class JobCancelled(JobFailed):
    pass


# ---- following a trainer stage's metrics.jsonl --------------------------------------------------------------


class MetricsFollower:
    """Reads the new complete lines of a trainer stage's metrics.jsonl as the stage writes them.

    A stage writes into `OUT.tmp-*` and renames it to OUT when done (or deletes it on error). The file is kept
    open once found, so the rename or the deletion does not lose lines; a stage too quick to catch in the act
    is read from OUT/metrics.jsonl afterwards. Temp dirs older than the run (left by a killed run) are ignored.
    """

    def __init__(
        self, *, out_dir: Path | None = None, metrics_path: Path | None = None, started_at: float | None = None
    ):
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.metrics_path = Path(metrics_path) if metrics_path is not None else None
        self.started_at = time.time() if started_at is None else started_at
        self._fh = None
        self._partial = ""

    def _find(self, *, finished: bool) -> Path | None:
        if self.metrics_path is not None:
            return self.metrics_path if self.metrics_path.exists() else None
        if self.out_dir is None:
            return None
        fresh = [
            p
            for p in self.out_dir.parent.glob(f"{self.out_dir.name}.tmp-*/metrics.jsonl")
            if p.stat().st_mtime >= self.started_at - 1.0
        ]
        if fresh:
            return max(fresh, key=lambda p: p.stat().st_mtime)
        final = self.out_dir / "metrics.jsonl"
        if finished and final.exists() and final.stat().st_mtime >= self.started_at - 1.0:
            return final
        return None

    def poll(self, *, finished: bool = False) -> list[dict[str, Any]]:
        if self._fh is None:
            path = self._find(finished=finished)
            if path is None:
                return []
            try:
                self._fh = open(path, encoding="utf-8")
            except FileNotFoundError:  # renamed between the glob and the open: next poll finds OUT
                return []
        text = self._partial + self._fh.read()
        *complete, self._partial = text.split("\n")
        if finished and self._partial.strip():
            complete.append(self._partial)
            self._partial = ""
        lines = []
        for raw in complete:
            if raw.strip():
                try:
                    lines.append(json.loads(raw))
                except json.JSONDecodeError:
                    continue  # a torn line from a killed stage: nothing to plot
        return lines

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def trainer_env() -> dict[str, str]:
    """The trainer never reaches the Hugging Face Hub: models and data come from the data dir."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }


def trainer_command(module: str, args: list[str], processes: int = 1) -> list[str]:
    """`python -m MODULE *args`; with several processes the same under torchrun on this machine (a standalone
    rendezvous; each process its share of every batch, trainer.distributed)."""
    if processes <= 1:
        return [sys.executable, "-m", module, *args]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    return [*torchrun, "-m", module, *args]


def run_trainer(
    args: list[str],
    *,
    stage: str,
    processes: int = 1,
    out_dir: Path | None = None,
    metrics_path: Path | None = None,
    on_metrics: MetricsCallback | None = None,
    log_dir: Path | None = None,
    cancelled: Callable[[], bool] | None = None,
    module: str = "trainer",
    grace_s: float = 3.0,
) -> str:
    """Run `python -m trainer *args` (or `module`), under torchrun when `processes` > 1, and return what it printed
    on stdout (stripped).

    Each new metrics.jsonl line goes to `on_metrics`. A non-zero exit raises JobFailed with the last lines of
    its stderr, its meaningful line and its stderr log; retried only when killed by a signal (exit 2, bad input
    or config, and a crash would repeat). stdout and stderr go to files in `log_dir` (`<stage>.stdout.log`,
    `<stage>.stderr.log`), never to pipes, so a chatty stage cannot block on a full pipe.
    """
    log_dir = Path(log_dir) if log_dir is not None else Path(out_dir).parent if out_dir is not None else Path.cwd()
    log_dir.mkdir(parents=True, exist_ok=True)
    stdout_path, stderr_path = log_dir / f"{stage}.stdout.log", log_dir / f"{stage}.stderr.log"
    follower = MetricsFollower(out_dir=out_dir, metrics_path=metrics_path)

    def deliver(lines: list[dict[str, Any]]) -> None:
        if on_metrics is not None:
            for line in lines:
                on_metrics(line)

    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = spawn_child(
            trainer_command(module, args, processes),
            stdout=out,
            stderr=err,
            env=trainer_env(),
            stdin=subprocess.DEVNULL,
        )
        try:
            while proc.poll() is None:
                deliver(follower.poll())
                if cancelled is not None and cancelled():
                    terminate_group_or_child(proc, grace_s)
                    raise JobCancelled(f"trainer {stage} cancelled")
                time.sleep(TRAINER_POLL_S)
            deliver(follower.poll(finished=True))
        except BaseException:
            if proc.poll() is None:
                terminate_group_or_child(proc, grace_s)
            raise
        finally:
            follower.close()
    if proc.returncode != 0:
        stderr = stderr_path.read_text(errors="replace")
        how = describe_exit(proc.returncode)
        line = error_summary(stderr)
        raise JobFailed(
            f"trainer {stage} failed ({how}):\n{tail_lines(stderr)}".rstrip(),
            stage=stage,
            summary=f"the {stage} step failed ({how}){': ' + line if line else ''}",
            log=str(stderr_path),
            retry=not will_repeat(proc.returncode),
        )
    return stdout_path.read_text(errors="replace").strip()


def terminate_group_or_child(proc: subprocess.Popen, grace_s: float) -> None:
    """The trainer shares our process group (so the worker's group kill reaches it); stop only it here."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---- the context handed to a job kind -----------------------------------------------------------------------


class JobContext:
    """One running job, seen from the child process. Writes are conditioned on this worker still holding the
    job; when it does not (swept as stale, finished elsewhere), JobLost stops the job."""

    def __init__(
        self,
        *,
        job_id: int,
        worker_id: str,
        kind: str,
        config: dict[str, Any],
        output_dir: Path,
        attempt: int = 1,
        max_attempts: int = 1,
    ):
        self.job_id = job_id
        self.worker_id = worker_id
        self.kind = kind
        self.config = config
        self.output_dir = output_dir
        self.attempt = attempt
        self.max_attempts = max_attempts
        self._latest: dict[str, Any] = {}
        self._progress_at = float("-inf")
        self._progress_message: str | None = None
        self.stage: str | None = None  # the kind's current step, named in its failure (set by kinds with steps)
        self.train_processes = 1  # processes each training stage runs on (set_train_processes)

    def session(self) -> AbstractContextManager[Session]:
        """A database session that commits on success (`with ctx.session() as s: ...`)."""
        return session_scope()

    def _write(self, session: Session, **values: Any) -> None:
        result = session.execute(
            update(Job)
            .where(Job.id == self.job_id, Job.worker_id == self.worker_id, Job.status == "running")
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            raise JobLost(f"job {self.job_id} is no longer held by worker {self.worker_id}")

    def progress(self, done: float, total: float, message: str = "") -> None:
        """Store progress; calls closer than PROGRESS_MIN_INTERVAL_S apart are dropped unless the message changes
        or the work is done, so a kind may report per item without flooding the database."""
        now = time.monotonic()
        if now - self._progress_at < PROGRESS_MIN_INTERVAL_S and message == self._progress_message and done < total:
            return
        with session_scope() as session:
            self._write(session, progress_done=float(done), progress_total=float(total), progress_message=message)
        self._progress_at, self._progress_message = now, message

    def report(self, done: float, total: float, message: str, result: dict[str, Any]) -> None:
        """Progress and the result so far (e.g. a build's steps), written together; the final result replaces it."""
        with session_scope() as session:
            self._write(
                session, progress_done=float(done), progress_total=float(total), progress_message=message, result=result
            )
        self._progress_at, self._progress_message = time.monotonic(), message

    def log_metrics(self, stage: str, step: int, values: dict[str, Any]) -> None:
        """One point of each named series (-> job_metrics, for the plots) and the latest values (-> job.metrics)."""
        values = {k: v for k, v in values.items() if k not in ("step", "total_steps")}
        self._latest.update(values)
        with session_scope() as session:
            self._write(session, metrics={**self._latest, "stage": stage, "step": int(step)})
            session.add(JobMetric(job_id=self.job_id, stage=stage, step=int(step), values=values))

    def set_train_processes(self, processes: int) -> None:
        """How many processes this job's training stages run on (torchrun), recorded on the job for its page."""
        with session_scope() as session:
            self._write(session, train_processes=processes)
        self.train_processes = processes

    def cancelled(self) -> bool:
        with get_read_sessionmaker()() as session:
            row = session.execute(
                select(Job.cancel_requested, Job.status, Job.worker_id).where(Job.id == self.job_id)
            ).first()
        return row is None or bool(row.cancel_requested) or row.status != "running" or row.worker_id != self.worker_id

    def run_trainer(
        self,
        args: list[str],
        *,
        stage: str,
        out_dir: Path | None = None,
        metrics_path: Path | None = None,
        processes: int = 1,
    ) -> str:
        """Run a trainer stage; its metrics.jsonl lines become job_metrics rows and the job's progress.
        Cancel needs nothing here: the worker stops the whole process group, the trainer included."""

        def on_metrics(line: dict[str, Any]) -> None:
            step, total = int(line.get("step", 0)), int(line.get("total_steps", 0))
            self.log_metrics(stage, step, line)
            if total > 0:
                self.progress(step, total, f"{stage}: step {step}/{total}")

        return run_trainer(
            args,
            stage=stage,
            processes=processes,
            out_dir=out_dir,
            metrics_path=metrics_path,
            on_metrics=on_metrics,
            log_dir=self.output_dir / "logs",
        )
