"""Job kinds for the queue tests (the worker loads them through RLHF_JOB_MODULES=tests.app.jobs.job_kinds).

Each kind leaves evidence in files under its config's "marker_dir", so tests can see what ran and how often,
even across processes.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from sqlalchemy import text

from app.jobs import JobFailed, job_kind, periodic_hook
from app.jobs.context import JobContext


def _mark(ctx: JobContext, name: str) -> None:
    """Append this attempt to the marker file; the file's line count is how many times it ran."""
    marker_dir = Path(ctx.config["marker_dir"])
    marker_dir.mkdir(parents=True, exist_ok=True)
    with open(marker_dir / name, "a") as fh:
        fh.write(f"{os.getpid()} {ctx.worker_id} attempt {ctx.attempt}\n")


@job_kind("test-touch")
def touch(ctx: JobContext) -> dict:
    """A short job with a side effect: writes a marker file; sleeps a little so workers overlap."""
    _mark(ctx, f"job-{ctx.job_id}")
    time.sleep(float(ctx.config.get("sleep_s", 0.05)))
    return {"pid": os.getpid()}


@job_kind("test-sleep")
def sleep(ctx: JobContext) -> dict:
    """Marks when it starts, then sleeps (cancel, SIGTERM and kill -9 tests stop it midway)."""
    _mark(ctx, f"start-{ctx.job_id}")
    total = float(ctx.config.get("sleep_s", 30))
    steps = max(1, int(total / 0.1))
    for i in range(steps):
        time.sleep(total / steps)
        if ctx.config.get("report_progress"):
            ctx.progress(i + 1, steps, "sleeping")
    return {"slept_s": total}


@job_kind("test-trainer")
def trainer(ctx: JobContext) -> dict:
    """Runs the fake trainer below as a grandchild (as ctx.run_trainer runs the real one), for cancel tests."""
    from app.jobs.context import run_trainer

    _mark(ctx, f"start-{ctx.job_id}")
    out = ctx.output_dir / "stage"
    stdout = run_trainer(
        [
            "--out",
            str(out),
            "--steps",
            str(ctx.config.get("steps", 600)),
            "--sleep",
            "0.1",
            "--pid-file",
            str(Path(ctx.config["marker_dir"]) / f"trainer-{ctx.job_id}"),
        ],
        stage="fake",
        out_dir=out,
        module="tests.app.jobs.job_kinds",
        log_dir=ctx.output_dir / "logs",
        on_metrics=lambda line: ctx.progress(line["step"], line["total_steps"]),
    )
    return {"out": stdout}


@job_kind("test-trainer-fails")
def trainer_fails(ctx: JobContext) -> dict:
    """A step whose fake trainer exits with config["exit"] (2: bad input) or is killed by SIGKILL ("kill")."""
    _mark(ctx, f"start-{ctx.job_id}")
    ctx.stage = "train"
    how = ["--kill"] if ctx.config["exit"] == "kill" else ["--exit", str(ctx.config["exit"])]
    from app.jobs.context import run_trainer

    out = ctx.output_dir / "stage"
    run_trainer(
        ["--out", str(out), "--steps", "3", *how],
        stage="fake",
        out_dir=out,
        module="tests.app.jobs.job_kinds",
        log_dir=ctx.output_dir / "logs",
    )
    return {}


@job_kind("test-progress")
def progress(ctx: JobContext) -> dict:
    steps = int(ctx.config.get("steps", 5))
    for step in range(1, steps + 1):
        ctx.log_metrics("train", step, {"loss": 1.0 / step, "objective/kl": 0.01 * step})
        ctx.progress(step, steps, f"step {step}/{steps}")
    return {"steps": steps}


@job_kind("test-raise")
def raise_(ctx: JobContext) -> dict:
    def deep(n: int) -> None:
        if n == 0:
            raise ValueError("the data was bad on purpose")
        deep(n - 1)

    deep(int(ctx.config.get("depth", 60)))  # a traceback longer than the 40 lines kept
    return {}


@job_kind("test-fail")
def fail(ctx: JobContext) -> dict:
    raise JobFailed("reason shown as is")


@job_kind("test-exit")
def exit_(ctx: JobContext) -> dict:
    """Dies without a Python exception: the worker records the exit status and the last output lines."""
    print("about to exit hard", file=sys.stderr, flush=True)
    if "marker_dir" in ctx.config:
        _mark(ctx, f"start-{ctx.job_id}")
    if ctx.config.get("code") == "kill":  # as the OOM killer ends a process
        os.kill(os.getpid(), 9)
    os._exit(int(ctx.config.get("code", 7)))


@periodic_hook
def record_hook_call(session, settings) -> None:
    """Proves the worker loop calls periodic hooks with a session and the settings."""
    target = os.environ.get("RLHF_TEST_HOOK_MARKER")
    if target:
        session.execute(text("SELECT 1"))
        Path(target).write_text(settings.sqlalchemy_url + "\n")


# ---- a stand-in for `python -m trainer` (run as `python -m tests.app.jobs.job_kinds ...`) ---------------------------


def fake_trainer(argv: list[str]) -> int:
    """Follows the trainer's output contract: writes OUT.tmp-*/metrics.jsonl ({step, total_steps, loss}), then
    renames the dir to OUT and prints OUT; with --fail it writes two lines, complains on stderr, deletes the temp
    dir and exits 3. Flags: --out DIR --steps N --sleep SECONDS [--fail]."""
    import argparse
    import json
    import shutil
    import tempfile

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--fail", action="store_true")
    parser.add_argument("--exit", type=int, help="complain like the trainer's user-facing errors and exit so")
    parser.add_argument("--kill", action="store_true", help="die by SIGKILL, as the OOM killer does")
    parser.add_argument("--pid-file")
    args = parser.parse_args(argv)
    if args.pid_file:
        Path(args.pid_file).write_text(f"{os.getpid()}\n")
    if args.exit is not None:
        print("loading the data", file=sys.stderr)
        print("error: data line 3: prompt is 217 tokens, the model takes at most 128", file=sys.stderr)
        return args.exit
    if args.kill:
        os.kill(os.getpid(), 9)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    with open(tmp / "metrics.jsonl", "a") as fh:
        for step in range(1, args.steps + 1):
            fh.write(json.dumps({"step": step, "total_steps": args.steps, "loss": 1.0 / step}) + "\n")
            fh.flush()
            if args.fail and step == 2:
                for i in range(60):
                    print(f"noise line {i}", file=sys.stderr)
                print("RuntimeError: fake trainer failed at step 2", file=sys.stderr)
                shutil.rmtree(tmp)
                return 3
            time.sleep(args.sleep)
    os.rename(tmp, out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(fake_trainer(sys.argv[1:]))
