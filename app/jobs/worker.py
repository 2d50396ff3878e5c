"""`rlhf worker`: claim one job at a time, run it in a child process, watch it.

While the child runs the worker heartbeats (every settings.heartbeat_s) and checks for a cancel request (twice a
second). Cancel: SIGTERM to the child's process group, SIGKILL after settings.cancel_grace_s, job cancelled.
SIGTERM/SIGINT to the worker: the same stop for its child, the job goes back to the queue with the attempt not
counted against it (a worker being shut down says nothing about the job), then the worker exits.
Between jobs, every poll: the periodic hooks, then the stale sweep (jobs of lost workers), then a claim.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.exc import DBAPIError

from app.db import get_read_sessionmaker, session_scope
from app.jobs import queue
from app.jobs.child import JOB_LOG, job_output_dir
from app.jobs.failures import error_summary, will_repeat
from app.jobs.processes import describe_exit, reap_group, spawn_group_leader, terminate_group
from app.jobs.registry import periodic_hooks
from app.models import Job
from app.settings import Settings

CANCEL_CHECK_S = 0.5
DB_RETRY_S = 2.0
WATCH_TICK_S = 0.1
ERROR_LINES = queue.ERROR_LINES

Log = Callable[[str], None]


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _stderr_log(message: str) -> None:
    print(f"[worker {os.getpid()}] {message}", file=sys.stderr, flush=True)


@dataclass
class _Schedule:
    next_beat: float
    next_check: float


@dataclass
class Worker:
    settings: Settings
    poll_s: float
    worker_id: str = field(default_factory=new_worker_id)
    log: Log = _stderr_log
    stopping: bool = False

    # ---- signals ----------------------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def stop(signum, _frame) -> None:
            self.log(f"{signal.Signals(signum).name}: stopping")
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(WATCH_TICK_S, max(0.0, deadline - time.monotonic())))

    # ---- the loop ---------------------------------------------------------------------------------------------

    def run(self, *, once: bool = False, max_jobs: int | None = None) -> int:
        """Run jobs until stopped (or after one claim attempt with `once`, or `max_jobs` jobs); returns the count."""
        done = 0
        self.log(f"started as {self.worker_id}")
        while not self.stopping:
            try:
                self.run_periodic_hooks()
                self.sweep()
                job = self.claim()
            except DBAPIError as exc:  # database restarting or unreachable: wait and try again
                self.log(f"database error, retrying in {DB_RETRY_S:g} s: {_first_line(exc)}")
                self.sleep(DB_RETRY_S)
                continue
            if job is not None:
                self.run_job(job)
                done += 1
            if once or (max_jobs is not None and done >= max_jobs):
                break
            if job is None:
                self.sleep(self.poll_s)
        self.log(f"exiting after {done} job(s)")
        return done

    def run_periodic_hooks(self) -> None:
        for hook in periodic_hooks():
            try:
                with session_scope() as session:
                    hook(session, self.settings)
            except Exception as exc:  # one broken hook must not stop the queue
                self.log(f"periodic hook {hook.__module__}.{hook.__qualname__} failed: {exc!r}")

    def sweep(self) -> None:
        with session_scope() as session:
            swept = queue.sweep_stale(session, stale_after_s=self.settings.stale_after_s)
        for item in swept:
            self.log(f"job {item.job_id}: stale heartbeat -> {item.status}")

    def claim(self) -> Job | None:
        with session_scope() as session:
            job = queue.claim_next(session, worker_id=self.worker_id)
            if job is not None:
                job.output_path = str(job_output_dir(job.id))
        return job

    # ---- one job ----------------------------------------------------------------------------------------------

    def run_job(self, job: Job) -> str:
        out_dir = job_output_dir(job.id)
        out_dir.mkdir(parents=True, exist_ok=True)
        log_path = out_dir / JOB_LOG
        self.log(f"job {job.id} ({job.kind}) attempt {job.attempts}: running")
        with open(log_path, "ab") as log_file:
            log_file.write(f"--- attempt {job.attempts} by worker {self.worker_id}\n".encode())
            log_file.flush()
            child = spawn_group_leader(
                [sys.executable, "-m", "app.jobs.child", str(job.id), self.worker_id],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        outcome = self.watch(job.id, child, log_path)
        self.log(f"job {job.id}: {outcome}")
        return outcome

    def watch(self, job_id: int, child: subprocess.Popen, log_path) -> str:
        clock = _Schedule(
            next_beat=time.monotonic() + self.settings.heartbeat_s, next_check=time.monotonic() + CANCEL_CHECK_S
        )
        while child.poll() is None:
            try:
                outcome = self.watch_tick(job_id, child, clock)
            except DBAPIError as exc:  # a missed heartbeat is fine; a long outage makes the job stale
                self.log(f"job {job_id}: database error while watching: {_first_line(exc)}")
                self.sleep_unless_stopping(DB_RETRY_S)
                continue
            if outcome is not None:
                return outcome
            time.sleep(WATCH_TICK_S)
        reap_group(child)
        return self.settle(job_id, child.returncode, log_path)

    def sleep_unless_stopping(self, seconds: float) -> None:
        if not self.stopping:
            self.sleep(seconds)

    def watch_tick(self, job_id: int, child: subprocess.Popen, clock: _Schedule) -> str | None:
        """One look at the job while its child runs; returns an outcome when watching is over."""
        if self.stopping:
            terminate_group(child, grace_s=self.settings.cancel_grace_s)
            with session_scope() as session:
                status = queue.requeue(session, job_id=job_id, worker_id=self.worker_id)
            return status or "lost"
        now = time.monotonic()
        if now >= clock.next_check:
            clock.next_check = now + CANCEL_CHECK_S
            with get_read_sessionmaker()() as session:
                state = queue.run_state(session, job_id=job_id, worker_id=self.worker_id)
            if state.cancel_requested and state.held:
                return self.stop_child(job_id, child)
            if not state.held:
                return self.let_go(job_id, child)
        if now >= clock.next_beat:
            clock.next_beat = now + self.settings.heartbeat_s
            with session_scope() as session:
                held = queue.heartbeat(session, job_id=job_id, worker_id=self.worker_id)
            if not held:
                return self.let_go(job_id, child)
        return None

    def stop_child(self, job_id: int, child: subprocess.Popen) -> str:
        """Cancel requested: stop the child's whole process group, then record the cancel."""
        returncode = terminate_group(child, grace_s=self.settings.cancel_grace_s)
        with session_scope() as session:
            if self.record_cancel(session, job_id, returncode):
                return "cancelled"
            job = session.get(Job, job_id)
            return f"{job.status if job else 'deleted'} before the cancel took effect"

    def record_cancel(self, session, job_id: int, returncode: int) -> bool:
        """The job ends cancelled, with how its process exited; False if it was no longer ours to finish."""
        return queue.finish(
            session,
            job_id=job_id,
            worker_id=self.worker_id,
            status="cancelled",
            error=f"cancelled ({describe_exit(returncode)})",
        )

    def let_go(self, job_id: int, child: subprocess.Popen) -> str:
        """The job is no longer ours: usually the child just recorded its outcome and is exiting; otherwise
        (swept as stale while we were stalled) stop it, since another worker may run the job now."""
        try:
            child.wait(timeout=self.settings.cancel_grace_s)
        except subprocess.TimeoutExpired:
            pass
        terminate_group(child, grace_s=self.settings.cancel_grace_s)
        with get_read_sessionmaker()() as session:
            job = session.get(Job, job_id)
            if job is None:
                return "deleted"
            if job.worker_id != self.worker_id:
                return f"lost to the stale sweep (now {job.status})"
            return job.status

    def settle(self, job_id: int, returncode: int, log_path) -> str:
        """The child exited by itself. It records success and raised errors; anything else (a crash, an exit
        without a result, a kill) is recorded here with the last lines of its output. A child killed by a signal
        (the OOM killer) goes back to the queue while attempts remain; an exit with a status would repeat."""
        with session_scope() as session:
            job = session.get(Job, job_id)
            if job is None or job.status != "running" or job.worker_id != self.worker_id:
                return job.status if job is not None else "deleted"
            if job.cancel_requested:
                self.record_cancel(session, job_id, returncode)
                return "cancelled"
            tail = queue.tail_lines(_read_attempt_log(log_path), ERROR_LINES - 1)
            reason = (
                "the job process exited without recording a result"
                if returncode == 0
                else f"the job process ended: {describe_exit(returncode)}"
            )
            if not will_repeat(returncode) and job.attempts < job.max_attempts:
                message = f"requeued after attempt {job.attempts}: {reason}"
                return (
                    queue.requeue(session, job_id=job_id, worker_id=self.worker_id, count_attempt=True, message=message)
                    or "lost"
                )
            line = error_summary(tail)
            queue.finish(
                session,
                job_id=job_id,
                worker_id=self.worker_id,
                status="failed",
                error=f"{reason}\n{tail}".rstrip(),
                error_summary=f"{reason}: {line}" if line else reason,
                error_log=JOB_LOG,
            )
            return "failed"


def _read_attempt_log(log_path) -> str:
    """This attempt's part of the job log (the log is appended to across attempts)."""
    try:
        text = log_path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    marker = text.rfind("--- attempt ")
    if marker >= 0:
        text = text[marker:].split("\n", 1)[1] if "\n" in text[marker:] else ""
    return text


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
