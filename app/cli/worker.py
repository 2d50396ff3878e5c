import typer

from app.cli.errors import fail
from app.db import DatabaseNotMigrated, DatabaseUnreachable, check_migrated, get_engine
from app.jobs.kinds import load_kinds
from app.jobs.registry import registered_kinds
from app.jobs.worker import Worker
from app.settings import get_settings


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)


def worker(
    once: bool = typer.Option(False, "--once", help="Run at most one job (if one is queued), then exit."),
    poll: float | None = typer.Option(
        None, "--poll", min=0.05, help="Seconds between polls of an empty queue (default: RLHF_WORKER_POLL_S)."
    ),
    max_jobs: int | None = typer.Option(None, "--max-jobs", min=1, help="Exit after this many jobs."),
) -> None:
    """Run queued jobs (training, generation, rounds), one at a time, each in a child process.

    SIGTERM or Ctrl-C stops the running job's process group and puts the job back in the queue (the attempt
    is not counted), then exits. Run several workers for parallel jobs; they never run one job twice.
    Extra job kind modules: RLHF_JOB_MODULES (comma-separated module names).
    """
    settings = get_settings()
    try:
        check_migrated(get_engine())
    except (DatabaseUnreachable, DatabaseNotMigrated) as exc:
        fail(str(exc))
    try:
        load_kinds()
    except ImportError as exc:
        fail(f"cannot load job kinds: {exc}")
    runner = Worker(settings=settings, poll_s=settings.worker_poll_s if poll is None else poll)
    runner.install_signal_handlers()
    runner.log(f"job kinds: {', '.join(registered_kinds()) or 'none'}")
    runner.run(once=once, max_jobs=max_jobs)
