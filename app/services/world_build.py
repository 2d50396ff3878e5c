"""The embedded world, built as a job of the worker while the pages are up (`rlhf demo` queues it and serves).

The `world` job writes the world's data, then runs its tokenizer, pretraining and SFT stages the way every job runs
the trainer (`python -m trainer STAGE --config FILE`, a child of the job's process group, so a cancel or a stopped
worker ends it), then registers the models, imports the prompts and queues the first generation (app.services.demo).
Stages already built in the data dir are skipped (trainer.world.build caches them), so a second build is quick.

While it runs, the job's result holds its steps (state, step counts, start and end times): the admin dashboard and
the demo's terminal both read them through `world_build_view`, which adds the estimate (remaining steps at the
step's own pace so far).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.jobs import job_kind
from app.jobs.context import JobContext, run_trainer
from app.models import Job, utcnow
from app.services.jobs import enqueue_job

WORLD_BUILD_KIND = "world"
ACTIVE = ("queued", "running")
STEPS = ("data", "tokenizer", "pretrain", "sft", "register")
STEP_LABELS = {
    "data": "world data",
    "tokenizer": "tokenizer",
    "pretrain": "pretraining",
    "sft": "SFT",
    "register": "models, prompts, first tasks",
}
WRITE_EVERY_S = 1.0  # progress writes while a stage runs: often enough for a page polling every 2 s


def queue_world_build(session: Session, *, size: str, seed: int, world_dir: Path) -> Job:
    """The world build of this size and seed: the queued or running one, else a new job."""
    for job in session.scalars(select(Job).where(Job.kind == WORLD_BUILD_KIND, Job.status.in_(ACTIVE))):
        if job.config.get("size") == size and job.config.get("seed") == seed:
            return job
    return enqueue_job(
        session,
        kind=WORLD_BUILD_KIND,
        config={"size": size, "seed": seed, "world_dir": str(Path(world_dir).resolve())},
        priority=10,  # before the generation it queues itself at the end
    )


# ---- the job ----------------------------------------------------------------------------------------------------


class StepTracker:
    """Turns the build's (stage, step, total) callbacks into the job's steps, progress and message."""

    def __init__(self, ctx: JobContext):
        self.ctx = ctx
        self.steps: dict[str, dict[str, Any]] = {
            name: {"name": name, "state": "waiting", "step": 0, "total": 0, "started_at": None, "finished_at": None}
            for name in STEPS
        }
        self._written_at = float("-inf")

    def __call__(self, stage: str, step: int, total: int) -> None:
        entry = self.steps[stage]
        changed = entry["state"] == "waiting" or step >= total
        if entry["state"] == "waiting":
            entry.update(state="running", started_at=time.time())
        if 0 < step < total and entry.get("paced_from") is None:
            entry["paced_from"] = [int(step), time.time()]  # the pace counts from the first step, not the start-up
        entry.update(step=int(step), total=int(total))
        if total > 0 and step >= total and entry["state"] == "running":
            entry.update(state="done", finished_at=time.time())
        if changed or time.monotonic() - self._written_at >= WRITE_EVERY_S:
            self.write()

    def write(self) -> None:
        steps = list(self.steps.values())
        done = sum(1.0 if s["state"] == "done" else (s["step"] / s["total"] if s["total"] else 0.0) for s in steps)
        current = next((s for s in steps if s["state"] == "running"), None)
        message = (
            f"{STEP_LABELS[current['name']]}: step {current['step']}/{current['total']}" if current else "world build"
        )
        self.ctx.report(done, len(steps), message, {"steps": steps})
        self._written_at = time.monotonic()


def _stage_config(args: list[str]) -> dict[str, str]:
    """`--n-layer 2 --out DIR` -> {"n_layer": "2", "out": "DIR"} (the trainer's --config coerces the strings)."""
    return {flag[2:].replace("-", "_"): value for flag, value in zip(args[::2], args[1::2], strict=True)}


def _runner(ctx: JobContext):
    """Runs a world stage as `python -m trainer STAGE --config FILE`, its metrics into the job's plots."""

    def run(stage: str, args: list[str], out: Path, *, on_progress=None, threads=None) -> None:
        config = out.parent / f"{out.name}.config.json"
        config.write_text(json.dumps(_stage_config(args), indent=2, sort_keys=True) + "\n", encoding="utf-8")

        def on_metrics(line: dict[str, Any]) -> None:
            step, total = int(line.get("step", 0)), int(line.get("total_steps", 0))
            ctx.log_metrics(stage, step, line)
            if on_progress is not None and total > 0:
                on_progress(stage, min(step, total - 1), total)  # done only once the stage has saved its output

        run_trainer(
            [stage, "--config", str(config)],
            stage=stage,
            out_dir=out,
            on_metrics=on_metrics,
            log_dir=ctx.output_dir / "logs",
        )

    return run


@job_kind(WORLD_BUILD_KIND)
def run_world_build(ctx: JobContext) -> dict[str, Any]:
    from app.services.demo import prepare_database
    from trainer.world.build import SIZES, build_world, prepare_models

    size, seed, world_dir = ctx.config["size"], int(ctx.config["seed"]), Path(ctx.config["world_dir"])
    if SIZES[size].threads:
        # this process runs this job alone: its trainer children inherit the size's thread count
        os.environ.update(OMP_NUM_THREADS=str(SIZES[size].threads), MKL_NUM_THREADS=str(SIZES[size].threads))
    tracker = StepTracker(ctx)
    tracker.write()
    files = build_world(size, world_dir, seed=seed, on_progress=tracker)
    models = prepare_models(size, world_dir, seed=seed, on_progress=tracker, runner=_runner(ctx))
    tracker("register", 0, 1)
    with ctx.session() as session:
        lines = prepare_database(session, files=files, models=models, size=size, seed=seed)
    tracker("register", 1, 1)
    return {"steps": list(tracker.steps.values()), "lines": lines, "size": size, "seed": seed}


# ---- what the pages and the terminal show -----------------------------------------------------------------------


@dataclass(frozen=True)
class BuildStep:
    name: str
    label: str
    state: str  # waiting | running | done
    step: int
    total: int
    elapsed_s: float | None
    eta_s: float | None  # running steps with progress: the rest at this step's pace so far


@dataclass(frozen=True)
class WorldBuildView:
    job_id: int
    status: str
    size: str
    steps: list[BuildStep]
    percent: int
    message: str
    error: str | None
    elapsed_s: float | None
    lines: list[str]

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def current(self) -> BuildStep | None:
        return next((s for s in self.steps if s.state == "running"), None)


def _step(raw: dict[str, Any], now: float) -> BuildStep:
    started, finished = raw.get("started_at"), raw.get("finished_at")
    elapsed = (finished or now) - started if started else None
    step, total = int(raw.get("step") or 0), int(raw.get("total") or 0)
    eta = None
    paced_from = raw.get("paced_from")
    if raw.get("state") == "running" and paced_from and paced_from[0] < step < total:
        eta = (now - paced_from[1]) / (step - paced_from[0]) * (total - step)
    name = raw.get("name", "?")
    return BuildStep(name, STEP_LABELS.get(name, name), raw.get("state", "waiting"), step, total, elapsed, eta)


def build_view(job: Job, *, now: float | None = None) -> WorldBuildView:
    now = time.time() if now is None else now
    raw_steps = (job.result or {}).get("steps") or [{"name": n, "state": "waiting"} for n in STEPS]
    steps = [_step(raw, now) for raw in raw_steps]
    if job.status == "running" and job.started_at is not None:
        elapsed = (utcnow() - job.started_at).total_seconds()
    else:
        elapsed = sum(s.elapsed_s or 0.0 for s in steps) if job.status == "succeeded" else None
    total = job.progress_total or len(STEPS)
    percent = 100 if job.status == "succeeded" else int(100 * (job.progress_done or 0.0) / total)
    return WorldBuildView(
        job_id=job.id,
        status=job.status,
        size=str((job.config or {}).get("size", "")),
        steps=steps,
        percent=min(percent, 100),
        message=job.progress_message or "",
        error=job.error,
        elapsed_s=elapsed,
        lines=list((job.result or {}).get("lines") or []),
    )


def latest_world_build(session: Session) -> Job | None:
    return session.scalar(select(Job).where(Job.kind == WORLD_BUILD_KIND).order_by(Job.id.desc()).limit(1))


def world_build_view(session: Session, *, job_id: int | None = None) -> WorldBuildView | None:
    """The given world build, or the latest one (None when there never was one)."""
    job = session.get(Job, job_id) if job_id is not None else latest_world_build(session)
    return build_view(job) if job is not None else None


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def progress_line(view: WorldBuildView) -> str:
    """One line for a terminal: the running step with its step count and estimate, and the build's share done."""
    if view.status == "queued":
        return f"world build (job {view.job_id}): queued, waiting for the worker"
    current = view.current
    if current is None:
        return f"world build (job {view.job_id}): {view.status}, {view.percent}%"
    index = [s.name for s in view.steps].index(current.name) + 1
    counts = f"step {current.step}/{current.total}" if current.total > 1 else "running"
    eta = f", about {duration(current.eta_s)} left in this step" if current.eta_s is not None else ""
    return (
        f"world build (job {view.job_id}) {index}/{len(view.steps)} {current.label}: {counts}{eta} "
        f"· {view.percent}% of the build"
    )


# ---- for annotators: is work on its way? ------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingWork:
    job_id: int
    kind: str
    status: str
    percent: int | None


TASK_MAKING_KINDS = (WORLD_BUILD_KIND, "generate")


def pending_work(session: Session) -> PendingWork | None:
    """The oldest queued or running job that will make tasks (a world build or a generation), if any."""
    job = session.scalar(
        select(Job)
        .where(Job.kind.in_(TASK_MAKING_KINDS), Job.status.in_(ACTIVE))
        .order_by(Job.status.desc(), Job.id)  # running before queued
        .limit(1)
    )
    if job is None:
        return None
    total = job.progress_total or 0.0
    percent = int(100 * job.progress_done / total) if total > 0 and job.status == "running" else None
    return PendingWork(job_id=job.id, kind=job.kind, status=job.status, percent=percent)
