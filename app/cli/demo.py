"""`rlhf demo`: the whole loop on the embedded world, from nothing, with no network (what `make run` calls).

Steps: migrate; create an admin and a demo annotator; then serve the web app and run a worker until Ctrl+C. The
world (its data, tokenizer, pretrained and SFT models, then registering both models, importing its prompts and
queueing the first tasks) is a job of that worker (app.services.world_build), so the pages are up at once and
show its progress, as the terminal does. Everything is cached in the data dir: when the world is already built a
start registers it in place (seconds) and queues nothing. `--prepare-only` builds in this process and exits.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time

import typer

from app.cli.errors import fail

SIZES = ("tiny", "small")
PROGRESS_EVERY_S = 5.0  # a progress line at least this often while the world builds


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


class StageBars:
    """`--prepare-only`: one progress bar per stage on a terminal; otherwise a plain line at each stage's start and
    end and every PROGRESS_EVERY_S in between, with its step count."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self._bars: dict[str, object] = {}
        self._tty = sys.stderr.isatty()
        self._last_line_at = float("-inf")

    def __call__(self, stage: str, step: int, total: int) -> None:
        if not self._tty:
            now = time.monotonic()
            if stage not in self._bars or step >= total or now - self._last_line_at >= PROGRESS_EVERY_S:
                self._bars[stage] = None
                counts = f"step {step}/{total}" if total > 1 else ("done" if step >= total else "running")
                typer.echo(f"  {stage}: {counts}", err=True)
                self._last_line_at = now
            return
        bar = self._bars.get(stage)
        if bar is None:
            bar = self._tqdm(total=max(total, 1), desc=f"{stage:>10}", unit="step", leave=True, file=sys.stderr)
            self._bars[stage] = bar
        bar.total = max(total, 1)
        bar.n = min(step, bar.total)
        bar.refresh()

    def close(self) -> None:
        for bar in self._bars.values():
            if bar is not None:
                bar.close()


def _ensure_user(db, *, username: str, role: str, password: str) -> str | None:
    """Creates the account if missing; returns the password to print (None when the account already existed)."""
    from app.services.users import create_user, get_user_by_name

    if get_user_by_name(db, username=username) is not None:
        return None
    create_user(db, username=username, role=role, password=password or secrets.token_urlsafe(12))
    return password or None


def demo(
    size: str = typer.Option("small", "--size", help="World size: tiny (tests, < 1 min) or small (the demo)."),
    prepare_only: bool = typer.Option(
        False, "--prepare-only", help="Build, register and import everything, then exit."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to serve on."),
    port: int = typer.Option(8000, "--port", help="Port to serve on."),
    seed: int = typer.Option(0, "--seed", help="Seed of the world and of the first generation."),
) -> None:
    """Build the embedded world, register its models, import its prompts, queue the first tasks, then serve."""
    if size not in SIZES:
        fail(f"--size must be one of {', '.join(SIZES)}, not {size!r}")
    from app.db import get_engine
    from app.migrations_runner import upgrade
    from app.settings import get_settings

    settings = get_settings()
    started = time.perf_counter()
    typer.echo(f"rlhf demo ({size}) in {settings.data_dir}", err=True)
    try:
        settings.ensure_data_dir()
        from app.db import check_connection

        check_connection(get_engine())
    except Exception as exc:
        fail(str(exc))
    upgrade(settings.sqlalchemy_url)

    world_dir = settings.data_dir / "world" / size
    from app.db import session_scope
    from trainer.world.build import WorldBuildError, build_all, world_is_built

    build_job_id = None
    if prepare_only or world_is_built(size, world_dir, seed=seed):
        bars = StageBars()
        try:
            files, models = build_all(size, world_dir, seed=seed, on_progress=bars)
        except WorldBuildError as exc:
            fail(f"building the {size} world failed: {exc}")
        finally:
            bars.close()
        from app.services.demo import prepare_database

        with session_scope() as db:
            summary = prepare_database(db, files=files, models=models, size=size, seed=seed)
    else:
        from app.services.world_build import queue_world_build

        with session_scope() as db:
            build_job_id = queue_world_build(db, size=size, seed=seed, world_dir=world_dir).id
        summary = [
            f"the {size} world is built by the worker as job {build_job_id} (data, tokenizer, pretraining, SFT), "
            "while the pages are up; its progress follows here and on the admin dashboard"
        ]
    with session_scope() as db:
        admin_pw = _ensure_user(
            db,
            username=settings.demo_admin_user,
            role="admin",
            password=settings.demo_admin_password or secrets.token_urlsafe(12),
        )
        annot_pw = _ensure_user(
            db,
            username=settings.demo_annotator_user,
            role="annotator",
            password=settings.demo_annotator_password or secrets.token_urlsafe(12),
        )
    for line in summary:
        typer.echo(f"  {line}", err=True)
    typer.echo(f"prepared in {time.perf_counter() - started:.0f} s", err=True)
    _print_credentials(settings, admin_pw, annot_pw)
    if prepare_only:
        return
    _serve_with_worker(host=host, port=port, build_job_id=build_job_id)


def _print_credentials(settings, admin_pw: str | None, annot_pw: str | None) -> None:
    for user, pw, role in (
        (settings.demo_admin_user, admin_pw, "admin"),
        (settings.demo_annotator_user, annot_pw, "annotator"),
    ):
        if pw:
            typer.echo(f"  {role}: username {user!r}, password {pw!r}  (shown once)", err=True)
        else:
            typer.echo(
                f"  {role}: username {user!r} (exists; password shown at its creation; "
                f"reset with `rlhf users password {user} --password-stdin`)",
                err=True,
            )


class BuildFollower:
    """Prints the world build's progress: a line when its step changes and every PROGRESS_EVERY_S in between (plain
    lines, so a log file or a pipe gets them too), then how it ended."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self.done = False
        self._last_line_at = float("-inf")
        self._last_step: str | None = None

    def poll(self) -> None:
        if self.done:
            return
        from app.db import get_read_sessionmaker
        from app.services.world_build import duration, progress_line, world_build_view

        with get_read_sessionmaker()() as db:
            view = world_build_view(db, job_id=self.job_id)
        if view is None:
            self.done = True
            return
        if not view.active:
            self.done = True
            if view.status == "succeeded":
                typer.echo(f"world built in {duration(view.elapsed_s)} (job {view.job_id})", err=True)
                for line in view.lines:
                    typer.echo(f"  {line}", err=True)
            else:
                typer.echo(f"world build (job {view.job_id}) {view.status}: {view.error or ''}".rstrip(), err=True)
                typer.echo(f"  its log: rlhf jobs show {view.job_id}", err=True)
            return
        step = f"{view.status}:{view.current.name if view.current else ''}"
        now = time.monotonic()
        if step != self._last_step or now - self._last_line_at >= PROGRESS_EVERY_S:
            typer.echo(progress_line(view), err=True)
            self._last_step, self._last_line_at = step, now


def _serve_with_worker(*, host: str, port: int, build_job_id: int | None = None) -> None:
    """Web and worker as two child processes; Ctrl+C (or SIGTERM) stops both (the worker stops its job's process
    group, trainer included, and puts the job back in the queue for the next start)."""
    cli = [sys.executable, "-m", "app.cli"]
    worker = subprocess.Popen([*cli, "worker"])
    server = subprocess.Popen([*cli, "serve", "--host", host, "--port", str(port)])
    typer.echo(f"\n  open http://{host}:{port}/  (Ctrl+C stops web and worker)\n", err=True)
    follower = BuildFollower(build_job_id) if build_job_id is not None else None

    stopping = False

    def stop(*_):
        nonlocal stopping
        if not stopping:  # a second Ctrl-C must not cut short the wait for web and worker to stop
            stopping = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # also when started in the background, where SIGINT comes in ignored
    try:
        while worker.poll() is None and server.poll() is None:
            if follower is not None:
                try:
                    follower.poll()
                except Exception as exc:  # the database busy for a moment: the next poll says more
                    typer.echo(f"world build progress unavailable: {exc}", err=True)
            time.sleep(0.5)
    except KeyboardInterrupt:
        typer.echo("stopping web and worker ...", err=True)
    finally:
        for proc in (server, worker):
            if proc.poll() is None:
                proc.terminate()
        for proc in (server, worker):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    if server.returncode not in (0, None, -signal.SIGTERM) or worker.returncode not in (0, None, -signal.SIGTERM):
        fail(f"stopped: server exited {server.returncode}, worker exited {worker.returncode}")
