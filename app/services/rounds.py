"""Training rounds: the `round` job kind, run by the worker's child process.

One round, each training step a `python -m trainer STAGE --config <file>` child process (ctx.run_trainer):

    snapshot   rounds/<id>/snapshot/ (app.services.snapshots): exports + prompts + manifest.json
    reward     a reward model on all preferences up to the snapshot (rankings whole, pairwise choices as pairs),
               initialised from the SFT ancestor (or the previous reward model), a held-out slice of the
               annotations for its accuracy; it adds the SFT ancestor's mean response log-likelihood with a
               learned weight (reward_likelihood)
    ppo | dpo  from the current policy; reference = the SFT ancestor; PPO's value model from the new RM
    | rs       or rejection sampling: the new RM's best of N samples of the current policy per train prompt
               (`trainer best-of-n`), then SFT of the current policy on them (Llama 2's rejection-sampling rounds)
    evaluate   new policy against the current one on eval-split prompts: win-rate under the new RM (and a gold
               judge when configured), KL to the reference, mean length, distinct-n -> reward-hacking warnings
    generate   samples of the new policy on train prompts, for the next tasks
    register   ONE transaction, only while this worker still holds the job: the reward model and the policy
               become registry rows and current, and the next tasks are created from the samples

Every stage writes into rounds/<id>/ and is skipped on a retry when its output is complete (trainer outputs
appear only when whole), and a killed PPO run continues from its checkpoint (`--resume policy.ckpt`). So a
worker killed mid-round leaves the registry untouched, and the next worker finishes the same round. The stage
configs written beside the outputs (`<stage>.config.json`) and the snapshot are all one needs to rerun a round
by hand; `snapshot_from` reruns one through the service on another round's snapshot.
"""

from __future__ import annotations

import json
import math
import shutil
import zlib
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.jobs.context import JobContext, JobLost
from app.jobs.registry import JobFailed, job_kind
from app.models import Annotation, Job, ModelVersion, Prompt, Task
from app.services.errors import ServiceError
from app.services.generation import store_generations, trainer_args
from app.services.jobs import enqueue_job
from app.services.models_registry import promote, register_model
from app.services.snapshots import (
    SnapshotError,
    SnapshotFilters,
    copy_snapshot,
    read_manifest,
    round_dir,
    snapshot_dir,
    verify_snapshot,
    write_snapshot,
)
from app.settings import get_settings

ROUND_KIND = "round"
ACTIVE_ROUND_INDEX = "uq_jobs_one_active_round"

# Trainer flags a round sets itself (paths); the rest of each stage's flags may come from the round config.
RESERVED_FLAGS = {
    "reward": {"model", "data", "eval_data", "out", "seed", "likelihood_model"},
    "ppo": {"policy", "reward_model", "prompts", "out", "ref", "value_model", "resume", "seed"},
    "dpo": {"policy", "data", "out", "ref", "seed"},
    "rs": {"policy", "judge", "prompts", "out", "seed"},
    "sft": {"model", "data", "out", "seed"},
}
# The round's defaults on top of the trainer's own (shown on the Rounds page). Everything else: trainer defaults.
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "reward": {"epochs": 1, "batch_size": 16, "lr": 1e-4},
    "ppo": {"epochs": 1, "batch_size": 16, "lr": 3e-6, "kl_coef": 0.05, "max_new_tokens": 32, "temperature": 0.7},
    "dpo": {"epochs": 1, "batch_size": 16, "lr": 5e-6},
    "rs": {"num_samples": 8, "temperature": 0.7, "max_new_tokens": 32},
    "sft": {"epochs": 2, "batch_size": 16, "lr": 2e-5},
}
STAGE_CONFIG_CLASSES = {
    "reward": ("trainer.reward_model", "RewardConfig"),
    "ppo": ("trainer.ppo", "PPOConfig"),
    "dpo": ("trainer.dpo", "DPOConfig"),
    "rs": ("trainer.best_of_n", "BestOfNConfig"),
    "sft": ("trainer.sft", "SftConfig"),
}
# The trainer stages each algorithm runs after the reward model (their flags: the config's field of that name).
ALGO_STAGES = {"ppo": ("ppo",), "dpo": ("dpo",), "rs": ("rs", "sft")}
# Reward-hacking warnings (point 5 of the rounds issue): thresholds on the evaluation's figures.
LENGTH_GROWTH_WARN = 1.5  # mean length after / before
REPETITION_WARN = 0.5  # distinct-2 after below this share of before's
REWARD_LENGTH_CORR_WARN = 0.7  # correlation of RM score and length among the new samples


class RoundError(ServiceError):
    """A round that cannot start (bad config, too little data, one already active); the message is safe to show."""


class NextTasks(BaseModel):
    """The tasks a round makes from its new policy's samples."""

    model_config = ConfigDict(extra="forbid")
    prompts: int = Field(32, ge=0, le=100_000, description="Train prompts to sample (fewest tasks first); 0 = none.")
    k: int = Field(2, ge=2, le=8, description="Responses per prompt.")
    kind: Literal["pairwise", "ranking"] = "pairwise"
    overlap: int = Field(1, ge=1, le=100)
    temperature: float = Field(1.0, ge=0.0)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _pairs_need_even_k(self) -> NextTasks:
        if self.kind == "pairwise" and self.k % 2:
            raise ValueError("pairwise tasks take the k responses two by two: k must be even")
        return self


class RoundConfig(BaseModel):
    """Everything a round is run with; stored as the job's config, so it can be rerun as is."""

    model_config = ConfigDict(extra="forbid")
    algo: Literal["ppo", "dpo", "rs"] = "ppo"
    seed: int = 0
    # data filters
    source: Literal["human", "ai", "all"] = "all"
    since: datetime | None = None
    min_agreement: float | None = Field(None, ge=0.0, le=1.0)
    min_pairs: int = Field(16, ge=1, description="Refuse the round with fewer preference pairs than this.")
    rm_eval_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of annotations held out from the RM.")
    snapshot_from: int | None = Field(None, description="Rerun on this round's snapshot instead of a new one.")
    # what trains from what
    reward_init: Literal["sft", "previous"] = "sft"
    reward_likelihood: bool = Field(
        True,
        description=(
            "The reward model adds the SFT ancestor's mean response log-likelihood, its weight learned with the head: "
            "what tells a right answer from a wrong one said alike."
        ),
    )
    policy_init: Literal["current", "sft"] = "current"
    reference: Literal["sft", "current"] = "sft"
    # trainer flags per stage (on top of STAGE_DEFAULTS)
    reward: dict[str, Any] = Field(default_factory=dict)
    ppo: dict[str, Any] = Field(default_factory=dict)
    dpo: dict[str, Any] = Field(default_factory=dict)
    rs: dict[str, Any] = Field(default_factory=dict, description="best-of-n flags (algo rs).")
    sft: dict[str, Any] = Field(default_factory=dict, description="SFT flags on the best samples (algo rs).")
    # evaluation
    eval_prompts: int = Field(64, ge=1, description="Eval-split prompts used to compare the policies.")
    eval_max_new_tokens: int = Field(32, ge=1)
    eval_temperature: float = Field(0.7, ge=0.0)
    eval_samples: int = Field(
        1,
        ge=1,
        le=16,
        description="Samples per eval prompt and policy: the win-rate's standard error falls with their square root.",
    )
    baseline: Literal["current", "sft"] = Field("current", description="The policy the new one is compared with.")
    report_samples: int = Field(8, ge=0, le=200, description="Eval prompts shown before/after on the report.")
    gold_judge: str = Field(
        "",
        description="module:function (prompt, response) -> float, e.g. "
        "trainer.world.judge:score on the embedded world.",
    )
    next_tasks: NextTasks = Field(default_factory=NextTasks)
    note: str = Field("", max_length=500, description="Why the round was started (e.g. the schedule's trigger).")

    @field_validator("gold_judge")
    @classmethod
    def _judge_spec(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("py:"):
            value = value[3:]
        if value and (value.count(":") != 1 or not all(value.split(":"))):
            raise ValueError("gold_judge must look like module:function")
        return value

    def stage_flags(self, stage: str) -> dict[str, Any]:
        return {**STAGE_DEFAULTS[stage], **getattr(self, stage)}


def parse_round_config(raw: dict[str, Any] | None) -> RoundConfig:
    """Validate a round config (API body, form, CLI options, job config); RoundError names the bad field."""
    try:
        config = RoundConfig.model_validate(raw or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise RoundError(f"{where}: {first['msg']}") from None
    for stage in ("reward", *ALGO_STAGES[config.algo]):
        check_stage_flags(stage, getattr(config, stage))
    return config


def check_stage_flags(stage: str, flags: dict[str, Any]) -> None:
    """The trainer's own config loader judges the flags (names, types, choices), so a bad one is refused at
    start, not minutes later in the worker."""
    import importlib

    from trainer.config import UsageError, load_config

    reserved = sorted(set(flags) & RESERVED_FLAGS[stage])
    if reserved:
        raise RoundError(f"{stage}: {', '.join(reserved)} are set by the round itself")
    module, name = STAGE_CONFIG_CLASSES[stage]
    try:
        cls = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError:
        raise RoundError(f"the trainer has no {stage} stage in this installation") from None
    placeholders = {f: "x" for f in RESERVED_FLAGS[stage] if f not in ("seed", "resume")}
    try:
        load_config(cls, None, {**STAGE_DEFAULTS[stage], **flags, **placeholders})
    except UsageError as exc:
        raise RoundError(f"{stage}: {exc}") from None


# ---- data checks and start ----------------------------------------------------------------------------------


def preference_pairs(session: Session, *, config: RoundConfig) -> int:
    """Preference pairs the round's filters admit now (pairwise choices + all pairs of each ranking), train split.
    The same rows the snapshot's trl export will hold."""
    stmt = (
        select(Annotation.kind, Annotation.choice, Annotation.chosen_id, Annotation.ranking)
        .join(Task, Task.id == Annotation.task_id)
        .join(Prompt, Prompt.id == Task.prompt_id)
        .where(Annotation.deleted_at.is_(None), Prompt.split == "train", Annotation.kind.in_(("pairwise", "ranking")))
    )
    if config.source != "all":
        stmt = stmt.where(Annotation.source == config.source)
    if config.since is not None:
        stmt = stmt.where(Annotation.created_at >= config.since)
    pairs = 0
    for kind, choice, chosen_id, ranking in session.execute(stmt.execution_options(yield_per=5000)):
        if kind == "pairwise":
            pairs += choice == "chosen" and chosen_id is not None
        elif ranking:
            pairs += len(ranking) * (len(ranking) - 1) // 2
    return pairs


def too_little_data(pairs: int, config: RoundConfig) -> str | None:
    if pairs >= config.min_pairs:
        return None
    whose = {"all": "human and AI", "human": "human", "ai": "AI"}[config.source]
    return (
        f"too little data for a round: {pairs} preference pair(s) from {whose} annotations on train prompts, "
        f"at least {config.min_pairs} needed (min_pairs); collect more labels or lower min_pairs"
    )


def current_policy(session: Session) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.kind == "policy", ModelVersion.is_current))


def active_round(session: Session) -> Job | None:
    return session.scalar(select(Job).where(Job.kind == ROUND_KIND, Job.status.in_(("queued", "running"))))


def start_round(session: Session, *, config: dict[str, Any] | RoundConfig, created_by_id: int | None = None) -> Job:
    """Enqueue a round after checking what can be checked now: config, a current policy, enough data, none active.
    Flushes; the caller commits. The database refuses a second active round whatever the caller checked."""
    cfg = config if isinstance(config, RoundConfig) else parse_round_config(config)
    if current_policy(session) is None:
        raise RoundError("no current policy: register one first (rlhf models register ... --kind policy --stage sft)")
    if cfg.snapshot_from is None:
        message = too_little_data(preference_pairs(session, config=cfg), cfg)
        if message:
            raise RoundError(message)
    else:
        source = session.get(Job, cfg.snapshot_from)
        if source is None or source.kind != ROUND_KIND:
            raise RoundError(f"snapshot_from: no round {cfg.snapshot_from}")
        if not (snapshot_dir(get_settings().data_dir, cfg.snapshot_from) / "manifest.json").is_file():
            raise RoundError(f"snapshot_from: round {cfg.snapshot_from} has no complete snapshot")
    active = active_round(session)
    if active is not None:
        raise RoundError(f"round {active.id} is already {active.status}: one round at a time", status=409)
    try:
        with session.begin_nested():
            job = enqueue_job(
                session,
                kind=ROUND_KIND,
                config=cfg.model_dump(mode="json"),
                created_by_id=created_by_id,
                max_attempts=get_settings().job_max_attempts,
            )
    except IntegrityError as exc:
        if ACTIVE_ROUND_INDEX in str(exc.orig) or "jobs.kind" in str(exc.orig):
            raise RoundError("another round was started at the same moment: one round at a time", status=409) from None
        raise
    return job


# ---- lineage ---------------------------------------------------------------------------------------------------


def sft_ancestor(session: Session, model: ModelVersion) -> ModelVersion:
    """The nearest SFT model up the parent chain (the model itself if it is one); else the chain's root."""
    node, seen = model, set()
    while node.stage != "sft" and node.parent_id is not None and node.id not in seen:
        seen.add(node.id)
        parent = session.get(ModelVersion, node.parent_id)
        if parent is None:
            break
        node = parent
    return node


def resolve_lineage(session: Session, cfg: RoundConfig) -> dict[str, ModelVersion | None]:
    current = current_policy(session)
    if current is None:
        raise JobFailed("no current policy: register one first")
    sft = sft_ancestor(session, current)
    reward = None
    if cfg.reward_init == "previous":
        reward = session.scalar(select(ModelVersion).where(ModelVersion.kind == "reward", ModelVersion.is_current))
    return {
        "current": current,
        "sft": sft,
        "previous_reward": reward,
        "start": current if cfg.policy_init == "current" else sft,
        "reference": sft if cfg.reference == "sft" else current,
    }


# ---- files of a round ------------------------------------------------------------------------------------------


def _remove_leftovers(directory: Path, name: str) -> None:
    """Temp dirs/files of a killed attempt (`NAME.tmp-*`): never complete, never reused."""
    for path in directory.glob(f"{name}.tmp-*"):
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _held_out(annotation_id: int, fraction: float) -> bool:
    """A fixed, seed-free split by annotation: a ranking's pairs stay on one side."""
    return fraction > 0 and zlib.crc32(str(annotation_id).encode()) % 10_000 < fraction * 10_000


def _pair_count(row: dict[str, Any]) -> int:
    return len(row["completions"]) * (len(row["completions"]) - 1) // 2 if "completions" in row else 1


def split_reward_data(snapshot: Path, out_dir: Path, fraction: float) -> tuple[Path, Path | None, int, int]:
    """The snapshot's preferences -> reward_train.jsonl + reward_eval.jsonl (held out by annotation id), counted
    in pairs. Rankings come whole from rankings.jsonl (the trainer encodes a ranking's K responses once and
    trains on its K(K-1)/2 pairs together: InstructGPT's remedy for the overfitting of ranking pairs shuffled
    apart); trl.jsonl adds the pairwise choices, skipping the ranking pairs it also holds."""
    rankings, trl = snapshot / "rankings.jsonl", snapshot / "trl.jsonl"
    train, held = out_dir / "reward_train.jsonl", out_dir / "reward_eval.jsonl"
    n_train = n_eval = 0
    ranked: set[int] = set()
    with open(train, "w", encoding="utf-8") as ft, open(held, "w", encoding="utf-8") as fe:
        for path, is_rankings in ((rankings, True), (trl, False)):
            if not path.is_file():
                continue
            with open(path, encoding="utf-8") as src:
                for line in src:
                    if not line.strip():
                        continue
                    row = json.loads(line)
                    if is_rankings:
                        ranked.add(row["annotation_id"])
                    elif row["annotation_id"] in ranked:
                        continue
                    if _held_out(row["annotation_id"], fraction):
                        fe.write(line)
                        n_eval += _pair_count(row)
                    else:
                        ft.write(line)
                        n_train += _pair_count(row)
    if n_eval == 0 or n_train == 0:  # too few to hold any out: train on everything, report no held-out accuracy
        with open(train, "a", encoding="utf-8") as ft:
            ft.write(held.read_text(encoding="utf-8"))
        held.unlink()
        return train, None, n_train + n_eval, 0
    return train, held, n_train, n_eval


def write_stage_config(path: Path, flags: dict[str, Any]) -> Path:
    path.write_text(json.dumps(flags, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_metrics(directory: Path) -> list[dict[str, Any]]:
    path = directory / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


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
    _remove_leftovers(out.parent, out.name)
    config = write_stage_config(out.parent / f"{stage}.config.json", flags)
    ctx.run_trainer([trainer_stage, "--config", str(config), *(extra or [])], stage=stage, out_dir=out)
    return read_metrics(out)


# ---- the job ----------------------------------------------------------------------------------------------------

STAGES = ("snapshot", "reward", "policy", "evaluate", "generate", "register")


def _stage_progress(ctx: JobContext, name: str) -> None:
    ctx.progress(STAGES.index(name), len(STAGES), name)


def make_snapshot(ctx: JobContext, cfg: RoundConfig, rdir: Path) -> dict[str, Any]:
    out = rdir / "snapshot"
    if out.is_dir():
        problems = verify_snapshot(out)
        if problems:
            raise JobFailed(f"the snapshot of an earlier attempt does not match its manifest: {'; '.join(problems)}")
        return read_manifest(out)
    _remove_leftovers(rdir, "snapshot")
    try:
        if cfg.snapshot_from is not None:
            return copy_snapshot(snapshot_dir(get_settings().data_dir, cfg.snapshot_from), out)
        filters = SnapshotFilters(source=cfg.source, since=cfg.since, min_agreement=cfg.min_agreement)
        from app.db import get_read_sessionmaker

        with get_read_sessionmaker()() as session:  # one read transaction: a consistent view on SQLite
            return write_snapshot(session, out=out, filters=filters, round_id=ctx.job_id)
    except SnapshotError as exc:
        raise JobFailed(str(exc)) from None


def train_reward(ctx: JobContext, cfg: RoundConfig, rdir: Path, lineage: dict, manifest: dict) -> dict[str, Any]:
    snap = rdir / "snapshot"
    train, held, n_train, n_eval = split_reward_data(snap, rdir, cfg.rm_eval_fraction)
    init = lineage["previous_reward"] or lineage["sft"]
    flags = {
        **cfg.stage_flags("reward"),
        "model": init.path,
        "data": str(train),
        "out": str(rdir / "reward"),
        "seed": cfg.seed,
    }
    if held is not None:
        flags["eval_data"] = str(held)
    if cfg.reward_likelihood:
        flags["likelihood_model"] = lineage["sft"].path
    lines = run_stage(ctx, stage="reward", trainer_stage="reward", out=rdir / "reward", flags=flags)
    return {"init_id": init.id, "train_pairs": n_train, "eval_pairs": n_eval, **last_values(lines)}


def train_policy(ctx: JobContext, cfg: RoundConfig, rdir: Path, lineage: dict) -> dict[str, Any]:
    out = rdir / "policy"
    start, reference = lineage["start"], lineage["reference"]
    if cfg.algo == "ppo":
        flags = {
            **cfg.stage_flags("ppo"),
            "policy": start.path,
            "ref": reference.path,
            "reward_model": str(rdir / "reward"),
            "prompts": str(rdir / "snapshot" / "prompts.jsonl"),
            "out": str(out),
            "seed": cfg.seed,
        }
        ckpt = rdir / "policy.ckpt"
        extra = ["--resume", str(ckpt)] if (ckpt / "state.pt").is_file() and not out.is_dir() else []
        lines = run_stage(ctx, stage="ppo", trainer_stage="ppo", out=out, flags=flags, extra=extra)
        return {"algo": "ppo", "resumed": bool(extra), **last_values(lines)}
    if cfg.algo == "rs":
        best = rdir / "best_of_n"
        flags = {
            **cfg.stage_flags("rs"),
            "policy": start.path,
            "judge": f"rm:{rdir / 'reward'}",
            "prompts": str(rdir / "snapshot" / "prompts.jsonl"),
            "out": str(best),
            "seed": cfg.seed,
        }
        picked = last_values(run_stage(ctx, stage="rs", trainer_stage="best-of-n", out=best, flags=flags))
        flags = {
            **cfg.stage_flags("sft"),
            "model": start.path,
            "data": str(best / "best.jsonl"),
            "out": str(out),
            "seed": cfg.seed,
        }
        lines = run_stage(ctx, stage="sft", trainer_stage="sft", out=out, flags=flags)
        return {"algo": "rs", **picked, **last_values(lines)}
    flags = {
        **cfg.stage_flags("dpo"),
        "policy": start.path,
        "ref": reference.path,
        "data": str(rdir / "snapshot" / "trl.jsonl"),
        "out": str(out),
        "seed": cfg.seed,
    }
    lines = run_stage(ctx, stage="dpo", trainer_stage="dpo", out=out, flags=flags)
    return {"algo": "dpo", **last_values(lines)}


def _eval_prompts_file(rdir: Path, count: int) -> Path:
    """The first `count` eval-split prompts of the snapshot (a fixed set, so rounds compare alike)."""
    out = rdir / "eval_prompts.jsonl"
    lines = (rdir / "snapshot" / "eval_prompts.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(lines[:count]), encoding="utf-8")
    return out


def generate_samples(
    ctx: JobContext, *, stage: str, model: str, prompts: Path, out: Path, request: dict[str, Any]
) -> Path:
    """`trainer generate` into `out`, unless an earlier attempt wrote it."""
    if out.is_file():
        return out
    _remove_leftovers(out.parent, out.name)
    ctx.run_trainer(trainer_args(model_path=model, prompts=prompts, out=out, request=request), stage=stage)
    return out


def evaluate_round(
    ctx: JobContext, cfg: RoundConfig, rdir: Path, lineage: dict, policy_metrics: dict[str, Any]
) -> dict[str, Any]:
    """New policy (A) against the current one (B) on eval prompts with `trainer evaluate`: win-rate under the new
    reward model (and the gold judge when configured), KL to the reference, mean length, distinct-n; plus a few
    samples of both, side by side, for the report."""
    saved = rdir / "evaluation.json"
    if saved.is_file():
        return json.loads(saved.read_text(encoding="utf-8"))
    prompts = _eval_prompts_file(rdir, cfg.eval_prompts)
    before = lineage["current"] if cfg.baseline == "current" else lineage["sft"]
    common = [
        "--policy",
        str(rdir / "policy"),
        "--baseline",
        before.path,
        "--prompts",
        str(prompts),
        "--max-new-tokens",
        str(cfg.eval_max_new_tokens),
        "--temperature",
        str(cfg.eval_temperature),
        "--num-samples",
        str(cfg.eval_samples),
        "--seed",
        str(cfg.seed),
    ]
    report: dict[str, Any] = {"prompts": _count_jsonl(prompts), "policy_id_before": before.id}
    judges = {"rm": (f"rm:{rdir / 'reward'}", ["--ref", lineage["reference"].path])}
    if cfg.gold_judge:
        judges["gold"] = (f"py:{cfg.gold_judge}", [])
    for name, (judge, extra) in judges.items():
        out = rdir / f"evaluate-{name}.json"
        if not out.is_file():
            _remove_leftovers(rdir, out.name)
            ctx.run_trainer(
                ["evaluate", *common, "--judge", judge, *extra, "--out", str(out)], stage=f"evaluate-{name}"
            )
        report[name] = json.loads(out.read_text(encoding="utf-8"))
    if cfg.report_samples > 0:
        report_prompts = rdir / "report_prompts.jsonl"
        lines = prompts.read_text(encoding="utf-8").splitlines(keepends=True)[: cfg.report_samples]
        report_prompts.write_text("".join(lines), encoding="utf-8")
        sampling = {
            "num_samples": 1,
            "temperature": cfg.eval_temperature,
            "top_k": 0,
            "top_p": 1.0,
            "max_new_tokens": cfg.eval_max_new_tokens,
            "seed": cfg.seed,
        }
        generate_samples(
            ctx,
            stage="samples-before",
            model=before.path,
            prompts=report_prompts,
            out=rdir / "samples_before.jsonl",
            request=sampling,
        )
        generate_samples(
            ctx,
            stage="samples-after",
            model=str(rdir / "policy"),
            prompts=report_prompts,
            out=rdir / "samples_after.jsonl",
            request=sampling,
        )
    report["summary"] = evaluation_summary(report)
    report["warnings"] = hacking_warnings(report, policy_metrics)
    saved.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return report


def _count_jsonl(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def evaluation_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The figures a round is judged by, flat (registry metrics, job result, Rounds page)."""
    out: dict[str, Any] = {}
    rm = report.get("rm", {})
    after, before = rm.get("policy", {}), rm.get("baseline", {})
    out["rm_win_rate"] = rm.get("win_rate", {}).get("win_rate")
    out["rm_win_rate_se"] = rm.get("win_rate", {}).get("standard_error")
    out["kl_to_ref"] = after.get("kl_to_ref")
    out["mean_length"] = after.get("mean_length")
    out["mean_length_before"] = before.get("mean_length")
    out["distinct_2"] = after.get("distinct_2")
    out["distinct_2_before"] = before.get("distinct_2")
    out["rm_score"] = after.get("judge_mean")
    out["rm_score_before"] = before.get("judge_mean")
    if "gold" in report:
        gold = report["gold"]
        out["gold_win_rate"] = gold.get("win_rate", {}).get("win_rate")
        out["gold_win_rate_se"] = gold.get("win_rate", {}).get("standard_error")
        out["gold_score"] = gold.get("policy", {}).get("judge_mean")
        out["gold_score_before"] = gold.get("baseline", {}).get("judge_mean")
    return {k: v for k, v in out.items() if v is not None}


def hacking_warnings(report: dict[str, Any], policy_metrics: dict[str, Any]) -> list[str]:
    """Signs that the policy games the reward model rather than getting better (Gao et al. 2022; Singhal et al.
    2023): length growth, repetition, reward that tracks length, and the RM and the gold judge disagreeing."""
    s = report.get("summary") or evaluation_summary(report)
    warnings = []
    before_len, after_len = s.get("mean_length_before"), s.get("mean_length")
    if before_len and after_len and after_len / before_len > LENGTH_GROWTH_WARN:
        warnings.append(
            f"length growth: mean length {before_len:.1f} -> {after_len:.1f} tokens (x{after_len / before_len:.2f})"
        )
    before_d2, after_d2 = s.get("distinct_2_before"), s.get("distinct_2")
    if before_d2 and after_d2 is not None and after_d2 < REPETITION_WARN * before_d2:
        warnings.append(f"repetition: distinct-2 {before_d2:.2f} -> {after_d2:.2f}")
    corr = policy_metrics.get("reward_length_corr")
    if isinstance(corr, (int, float)) and not math.isnan(corr) and corr > REWARD_LENGTH_CORR_WARN:
        warnings.append(
            f"reward-length correlation {corr:.2f} among the policy's training samples (PPO's last "
            "batch, or all best-of-n samples): the reward model may pay for length"
        )
    rm_win, gold_win = s.get("rm_win_rate"), s.get("gold_win_rate")
    if rm_win is not None and gold_win is not None and rm_win > 0.6 and gold_win < 0.5:
        warnings.append(
            f"the reward model prefers the new policy ({rm_win:.0%}) but the gold judge does not ({gold_win:.0%})"
        )
    return warnings


def next_task_prompts(session: Session, rdir: Path, count: int) -> Path:
    """Train prompts with the fewest tasks so far (then oldest), for the next tasks."""
    out = rdir / "next_prompts.jsonl"
    if out.is_file():
        return out
    tasks = select(Task.prompt_id, func.count().label("n")).group_by(Task.prompt_id).subquery()
    rows = session.execute(
        select(Prompt.id, Prompt.text, Prompt.messages)
        .outerjoin(tasks, tasks.c.prompt_id == Prompt.id)
        .where(Prompt.split == "train")
        .order_by(func.coalesce(tasks.c.n, 0), Prompt.id)
        .limit(count)
    ).all()
    tmp = out.with_name(out.name + ".tmp-write")
    with open(tmp, "w", encoding="utf-8") as fh:
        for prompt_id, text, messages in rows:
            line = {"prompt_id": prompt_id, **({"messages": messages} if messages is not None else {"prompt": text})}
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return out


def register_round(
    ctx: JobContext,
    cfg: RoundConfig,
    rdir: Path,
    lineage: dict,
    *,
    reward_metrics: dict,
    policy_metrics: dict,
    evaluation: dict,
    samples: Path | None,
) -> dict[str, Any]:
    """One transaction: the registry rows (both made current) and the next tasks. Conditioned on this worker still
    holding the job, so a round taken over by another worker cannot register twice."""
    with ctx.session() as session:
        held = session.execute(
            update(Job)
            .where(Job.id == ctx.job_id, Job.worker_id == ctx.worker_id, Job.status == "running")
            .values(progress_message="register")
            .execution_options(synchronize_session=False)
        ).rowcount
        if held != 1:
            raise JobLost(f"job {ctx.job_id} is no longer held by worker {ctx.worker_id}")
        existing = session.scalar(
            select(ModelVersion).where(ModelVersion.round_job_id == ctx.job_id, ModelVersion.kind == "policy")
        )
        if existing is not None:  # registered by an earlier attempt that died before recording success
            reward_id = session.scalar(
                select(ModelVersion.id).where(ModelVersion.round_job_id == ctx.job_id, ModelVersion.kind == "reward")
            )
            tasks = session.scalar(select(func.count()).select_from(Task).where(Task.job_id == ctx.job_id)) or 0
            return {"policy_id": existing.id, "reward_model_id": reward_id, "tasks": tasks}
        reward_parent = lineage["previous_reward"] or lineage["sft"]
        reward = register_model(
            session,
            path=rdir / "reward",
            name=f"reward-r{ctx.job_id}",
            kind="reward",
            stage="rlhf",
            parent_id=reward_parent.id,
            job_id=ctx.job_id,
            metrics=reward_metrics,
            check=False,
        )
        policy = register_model(
            session,
            path=rdir / "policy",
            name=f"policy-r{ctx.job_id}",
            kind="policy",
            stage="rlhf",
            parent_id=lineage["start"].id,
            job_id=ctx.job_id,
            metrics={**policy_metrics, "evaluation": evaluation["summary"]},
            check=False,
        )
        reward.round_job_id = policy.round_job_id = ctx.job_id
        promote(session, model_id=reward.id)
        promote(session, model_id=policy.id)
        tasks = 0
        if samples is not None:
            tasks = store_generations(
                session, samples_path=samples, request=next_task_request(cfg), model_id=policy.id, job_id=ctx.job_id
            )["tasks"]
        return {"policy_id": policy.id, "reward_model_id": reward.id, "tasks": tasks}


def next_task_request(cfg: RoundConfig) -> dict[str, Any]:
    """The next tasks as a generation request (app.services.generation's fields)."""
    nt = cfg.next_tasks
    return {
        "num_samples": nt.k,
        "temperature": nt.temperature,
        "top_k": nt.top_k,
        "top_p": nt.top_p,
        "max_new_tokens": nt.max_new_tokens,
        "seed": cfg.seed,
        "task_kind": nt.kind,
        "overlap": nt.overlap,
        "priority": 0,
    }


@job_kind(ROUND_KIND)
def run_round(ctx: JobContext) -> dict[str, Any]:
    cfg = parse_round_config(ctx.config)
    rdir = round_dir(get_settings().data_dir, ctx.job_id)
    rdir.mkdir(parents=True, exist_ok=True)
    with ctx.session() as session:
        lineage = resolve_lineage(session, cfg)
        session.expunge_all()

    _stage_progress(ctx, "snapshot")
    manifest = make_snapshot(ctx, cfg, rdir)
    pairs = manifest["files"]["trl.jsonl"]["rows"]
    message = too_little_data(pairs, cfg)
    if message:
        raise JobFailed(message)
    if manifest["files"]["eval_prompts.jsonl"]["rows"] == 0:
        raise JobFailed('no eval-split prompts to evaluate the round on: import some prompts with split "eval"')

    _stage_progress(ctx, "reward")
    reward_metrics = train_reward(ctx, cfg, rdir, lineage, manifest)
    _stage_progress(ctx, "policy")
    policy_metrics = train_policy(ctx, cfg, rdir, lineage)
    _stage_progress(ctx, "evaluate")
    evaluation = evaluate_round(ctx, cfg, rdir, lineage, policy_metrics)

    _stage_progress(ctx, "generate")
    samples = None
    if cfg.next_tasks.prompts > 0:
        with ctx.session() as session:
            prompts = next_task_prompts(session, rdir, cfg.next_tasks.prompts)
        if prompts.stat().st_size > 0:
            samples = rdir / "next_samples.jsonl"
            if not samples.is_file():
                _remove_leftovers(rdir, samples.name)
                ctx.run_trainer(
                    trainer_args(
                        model_path=str(rdir / "policy"), prompts=prompts, out=samples, request=next_task_request(cfg)
                    ),
                    stage="generate",
                )

    _stage_progress(ctx, "register")
    registered = register_round(
        ctx,
        cfg,
        rdir,
        lineage,
        reward_metrics=reward_metrics,
        policy_metrics=policy_metrics,
        evaluation=evaluation,
        samples=samples,
    )
    ctx.progress(len(STAGES), len(STAGES), "done")
    return {
        "round_id": ctx.job_id,
        "algo": cfg.algo,
        "snapshot": {
            "path": str(rdir / "snapshot"),
            "max_annotation_id": manifest["max_annotation_id"],
            "rows": manifest["rows"],
        },
        "parent_policy_id": lineage["start"].id,
        "reference_id": lineage["reference"].id,
        **registered,
        "reward": reward_metrics,
        "policy": policy_metrics,
        "evaluation": evaluation["summary"],
        "warnings": evaluation.get("warnings", []),
    }


# ---- listing ----


def round_summary(job: Job) -> dict[str, Any]:
    """One row of the rounds list / API: the job plus the figures of its report."""
    config = job.config or {}
    result = job.result or {}
    return {
        "id": job.id,
        "status": job.status,
        "algo": config.get("algo", "ppo"),
        "note": config.get("note", ""),
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "policy_id": result.get("policy_id"),
        "reward_model_id": result.get("reward_model_id"),
        "tasks": result.get("tasks"),
        "evaluation": result.get("evaluation", {}),
        "warnings": result.get("warnings", []),
        "rm_accuracy": (result.get("reward") or {}).get("eval_accuracy"),
        "progress_message": job.progress_message,
    }


def round_to_dict(job: Job) -> dict[str, Any]:
    row = round_summary(job)
    for key in ("created_at", "finished_at"):
        row[key] = row[key].isoformat() if row[key] else None
    return row


def list_rounds(db: Session, limit: int = 100) -> list[Job]:
    return list(db.scalars(select(Job).where(Job.kind == ROUND_KIND).order_by(Job.id.desc()).limit(limit)))
