"""The child process that runs one job: `python -m app.jobs.child JOB_ID WORKER_ID`.

Started by `rlhf worker` in its own process group, with stdout and stderr going to the job's log file. It runs
the kind's function and records the outcome itself (result or the error's last lines) in one conditional
UPDATE. Exit status: 0 succeeded, 1 failed (recorded), 3 the job was no longer this worker's.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

from app.db import session_scope
from app.jobs import queue
from app.jobs.context import JobContext, JobLost
from app.jobs.failures import error_summary
from app.jobs.kinds import load_kinds
from app.jobs.registry import JobFailed, get_kind
from app.models import Job
from app.settings import get_settings

EXIT_FAILED = 1
EXIT_LOST = 3
JOB_LOG = "job.log"  # the child's stdout and stderr, in the job's output dir


def job_output_dir(job_id: int):
    return get_settings().data_dir / "jobs" / str(job_id)


def _record(job_id: int, worker_id: str, *, status: str, **outcome: Any) -> bool:
    with session_scope() as session:
        return queue.finish(session, job_id=job_id, worker_id=worker_id, status=status, **outcome)


def _log_name(ctx: JobContext, log: str | None) -> str:
    """The failure's log relative to the job's output dir; the child's own log (job.log) when none is named."""
    if log:
        try:
            return str(Path(log).resolve().relative_to(ctx.output_dir.resolve()))
        except ValueError:
            pass
    return JOB_LOG


def _fail(ctx: JobContext, worker_id: str, exc: JobFailed) -> int:
    """Record a failure, or give the job back to the queue when another attempt may succeed and one is left."""
    message = queue.tail_lines(str(exc) or type(exc).__name__)
    print(f"job failed: {message}", file=sys.stderr)
    if exc.retry and ctx.attempt < ctx.max_attempts:
        with session_scope() as session:
            status = queue.requeue(
                session,
                job_id=ctx.job_id,
                worker_id=worker_id,
                count_attempt=True,
                message=f"requeued after attempt {ctx.attempt}: {exc.summary or error_summary(message)}",
            )
        return EXIT_FAILED if status else EXIT_LOST
    recorded = _record(
        ctx.job_id,
        worker_id,
        status="failed",
        error=message,
        failed_stage=ctx.stage or exc.stage,
        error_summary=exc.summary or error_summary(message),
        error_log=_log_name(ctx, exc.log),
    )
    return EXIT_FAILED if recorded else EXIT_LOST


def run(job_id: int, worker_id: str) -> int:
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or job.status != "running" or job.worker_id != worker_id:
            print(f"job {job_id} is not running under worker {worker_id}", file=sys.stderr)
            return EXIT_LOST
        ctx = JobContext(
            job_id=job.id,
            worker_id=worker_id,
            kind=job.kind,
            config=dict(job.config or {}),
            output_dir=job_output_dir(job.id),
            attempt=job.attempts,
            max_attempts=job.max_attempts,
        )
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    try:
        load_kinds()
        result = get_kind(ctx.kind)(ctx) or {}
        if not isinstance(result, dict):
            raise TypeError(f"job kind {ctx.kind!r} returned {type(result).__name__}, not a dict")
        result = json.loads(json.dumps(result))  # only JSON values are stored
    except JobLost as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_LOST
    except JobFailed as exc:
        return _fail(ctx, worker_id, exc)
    except Exception:
        text = traceback.format_exc()
        print(text, file=sys.stderr)
        recorded = _record(
            job_id,
            worker_id,
            status="failed",
            error=queue.tail_lines(text),
            failed_stage=ctx.stage,
            error_summary=error_summary(text),
            error_log=JOB_LOG,
        )
        return EXIT_FAILED if recorded else EXIT_LOST
    return 0 if _record(job_id, worker_id, status="succeeded", result=result) else EXIT_LOST


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[0].isdigit():
        print("usage: python -m app.jobs.child JOB_ID WORKER_ID", file=sys.stderr)
        return 2
    return run(int(args[0]), args[1])


if __name__ == "__main__":
    sys.exit(main())
