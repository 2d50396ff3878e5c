"""The job queue: jobs live in the `jobs` table (no broker); `rlhf worker` claims them one at a time and runs
each in a child process (`python -m app.jobs.child`). Job kinds register a function with `@job_kind`."""

from app.jobs.registry import JobFailed, job_kind, periodic_hook

__all__ = ["JobFailed", "job_kind", "periodic_hook"]
