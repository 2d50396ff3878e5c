"""The child process that runs one job: `python -m app.jobs.child JOB_ID WORKER_ID`.

Started by `rlhf worker` in its own process group, with stdout and stderr going to the job's log file. It runs
the kind's function and records the outcome itself (result or the error's last lines) in one conditional
UPDATE. Exit status: 0 succeeded, 1 failed (recorded), 3 the job was no longer this worker's.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

from app.db import session_scope
from app.jobs import queue
from app.jobs.context import JobContext, JobLost
from app.jobs.kinds import load_kinds
from app.jobs.registry import JobFailed, get_kind
from app.models import Job
from app.settings import get_settings

EXIT_FAILED = 1
EXIT_LOST = 3


def job_output_dir(job_id: int):
    return get_settings().data_dir / "jobs" / str(job_id)


def _record(
    job_id: int, worker_id: str, *, status: str, error: str | None = None, result: dict[str, Any] | None = None
) -> bool:
    with session_scope() as session:
        return queue.finish(session, job_id=job_id, worker_id=worker_id, status=status, error=error, result=result)


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
        message = queue.tail_lines(str(exc) or type(exc).__name__)
        print(f"job failed: {message}", file=sys.stderr)
        return EXIT_FAILED if _record(job_id, worker_id, status="failed", error=message) else EXIT_LOST
    except Exception:
        text = traceback.format_exc()
        print(text, file=sys.stderr)
        recorded = _record(job_id, worker_id, status="failed", error=queue.tail_lines(text))
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
