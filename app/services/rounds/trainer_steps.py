"""One trainer step of a round: `python -m trainer STAGE --config <file>` into a directory of rounds/<id>/,
skipped on a retry when an earlier attempt completed it (trainer outputs appear only when whole), its metrics
read back (and replayed into the job's plots when skipped)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from app.jobs.context import JobContext
from app.services.generation import trainer_args
from app.services.rounds.config import RoundConfig
from app.services.rounds.data import read_jsonl


def remove_leftovers(directory: Path, name: str) -> None:
    """Temp dirs/files of a killed attempt (`NAME.tmp-*`): never complete, never reused."""
    for path in directory.glob(f"{name}.tmp-*"):
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def write_stage_config(path: Path, flags: dict[str, Any]) -> Path:
    path.write_text(json.dumps(flags, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_metrics(directory: Path) -> list[dict[str, Any]]:
    return read_jsonl(directory / "metrics.jsonl")


def replay_metrics(ctx: JobContext, stage: str, directory: Path) -> list[dict[str, Any]]:
    """A stage finished by an earlier attempt: its series goes back into the job's plots (a retry clears them)."""
    lines = read_metrics(directory)
    for line in lines:
        ctx.log_metrics(stage, int(line.get("step", 0)), line)
    return lines


def last_values(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The final value of every metric of a stage's metrics.jsonl."""
    out: dict[str, Any] = {}
    for line in lines:
        out.update({k: v for k, v in line.items() if k not in ("step", "total_steps")})
    return out


def run_stage(
    ctx: JobContext, *, stage: str, trainer_stage: str, out: Path, flags: dict[str, Any], extra: list[str] | None = None
) -> list[dict[str, Any]]:
    """Run one trainer stage into `out` unless an earlier attempt completed it; its metrics lines."""
    if out.is_dir():
        return replay_metrics(ctx, stage, out)
    remove_leftovers(out.parent, out.name)
    config = write_stage_config(out.parent / f"{stage}.config.json", flags)
    ctx.run_trainer(
        [trainer_stage, "--config", str(config), *(extra or [])],
        stage=stage,
        out_dir=out,
        processes=ctx.train_processes,
    )
    return read_metrics(out)


# ---- the job ----------------------------------------------------------------------------------------------------


def generate_samples(
    ctx: JobContext,
    *,
    stage: str,
    model: str,
    prompts: Path,
    out: Path,
    request: dict[str, Any],
    reward_models: list[str] = (),
) -> Path:
    """`trainer generate` into `out`, unless an earlier attempt wrote it."""
    if out.is_file():
        return out
    remove_leftovers(out.parent, out.name)
    args = trainer_args(model_path=model, prompts=prompts, out=out, request=request, reward_models=list(reward_models))
    ctx.run_trainer(args, stage=stage)
    return out


def comparison_args(cfg: RoundConfig, rdir: Path, *, baseline: str, prompts: Path) -> list[str]:
    """`trainer evaluate`'s flags for the round's new policy (rdir/policy) against `baseline` on `prompts`, sampled
    as the round's evaluation samples (its length, temperature and seed): the eval report and the flag probe."""
    return [
        "--policy",
        str(rdir / "policy"),
        "--baseline",
        baseline,
        "--prompts",
        str(prompts),
        "--max-new-tokens",
        str(cfg.eval_max_new_tokens),
        "--temperature",
        str(cfg.eval_temperature),
        "--seed",
        str(cfg.seed),
    ]
