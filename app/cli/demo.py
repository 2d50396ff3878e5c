"""`rlhf demo`: the whole loop on the embedded world, from nothing, with no network (what `make run` calls).

Steps (each cached in the data dir, so a second start takes seconds): migrate; build the world's data and train
its tokenizer, pretrained and SFT models (`python -m trainer ...` in child processes, a progress bar per stage);
register both models (the SFT one current); import the world's prompts; queue the generation of the first tasks;
create an admin and a demo annotator; then serve the web app and run a worker until Ctrl+C.
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


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


class StageBars:
    """One progress bar per stage on a terminal; one line per stage otherwise."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self._bars: dict[str, object] = {}
        self._tty = sys.stderr.isatty()

    def __call__(self, stage: str, step: int, total: int) -> None:
        bar = self._bars.get(stage)
        if bar is None:
            if not self._tty:
                typer.echo(f"  {stage} ...", err=True)
            bar = self._tqdm(
                total=max(total, 1),
                desc=f"{stage:>10}",
                unit="step",
                leave=True,
                disable=not self._tty,
                file=sys.stderr,
            )
            self._bars[stage] = bar
        bar.total = max(total, 1)
        bar.n = min(step, bar.total)
        bar.refresh()

    def close(self) -> None:
        for bar in self._bars.values():
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
    bars = StageBars()
    try:
        from trainer.world.build import WorldBuildError, build_all

        files, models = build_all(size, world_dir, seed=seed, on_progress=bars)
    except WorldBuildError as exc:
        fail(f"building the {size} world failed: {exc}")
    finally:
        bars.close()

    from app.db import session_scope
    from app.services.demo import prepare_database

    with session_scope() as db:
        summary = prepare_database(db, files=files, models=models, size=size, seed=seed)
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
    _serve_with_worker(host=host, port=port)


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


def _serve_with_worker(*, host: str, port: int) -> None:
    """Web and worker as two child processes; Ctrl+C (or SIGTERM) stops both."""
    cli = [sys.executable, "-m", "app.cli"]
    worker = subprocess.Popen([*cli, "worker"])
    server = subprocess.Popen([*cli, "serve", "--host", host, "--port", str(port)])
    typer.echo(f"\n  open http://{host}:{port}/  (Ctrl+C stops web and worker)\n", err=True)

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # also when started in the background, where SIGINT comes in ignored
    try:
        while worker.poll() is None and server.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
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
