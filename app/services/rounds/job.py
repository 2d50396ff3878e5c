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
               and, when a check fails, the answers to train prompts it points at (app.services.rounds.flagged)
    generate   samples of the new policy on train prompts, for the next tasks (with next_tasks.select, the most
               informative of more candidates, scored by the new reward model, and the latest ones for disagreement)
    register   ONE transaction, only while this worker still holds the job: the reward model and the policy
               become registry rows, and current only when the policy passes the promotion gate (it beats the
               current one under the new RM beyond its standard error, no reward-hacking check fails); the next
               tasks are created from the samples, and the flagged answers become tasks offered first

Every stage writes into rounds/<id>/ and is skipped on a retry when its output is complete (trainer outputs
appear only when whole), and a killed PPO run continues from its checkpoint (`--resume policy.ckpt`). So a
worker killed mid-round leaves the registry untouched, and the next worker finishes the same round. The stage
configs written beside the outputs (`<stage>.config.json`) and the snapshot are all one needs to rerun a round
by hand; `snapshot_from` reruns one through the service on another round's snapshot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update

from app.jobs.context import JobContext, JobLost
from app.jobs.registry import JobFailed, job_kind
from app.models import Job, ModelVersion, Task
from app.services.annotator_weights import WeightingError
from app.services.generation import DISAGREEMENT_MODELS, store_generations
from app.services.jobs import list_jobs
from app.services.models_registry import list_models, promote, register_model
from app.services.rounds.config import ALGO_STAGES, ROUND_KIND, RoundConfig, parse_round_config
from app.services.rounds.data import (
    dpo_pairs_file,
    next_task_prompts,
    read_jsonl,
    rewrite_pairs,
    split_reward_data,
)
from app.services.rounds.evaluate import evaluate_round
from app.services.rounds.flagged import store_flagged_tasks
from app.services.rounds.lineage import Lineage, resolve_lineage
from app.services.rounds.promotion import promotion_verdict
from app.services.rounds.start import too_little_data
from app.services.rounds.trainer_steps import generate_samples, last_values, remove_leftovers, run_stage
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
from app.services.verdict import VerdictError, queue_verdict
from app.settings import get_settings
from trainer.context_fit import SKIPPED_METRIC as SKIPPED
from trainer.outputs import PEAK_MEMORY_METRIC as PEAK_MEMORY

STAGES = ("snapshot", "reward", "policy", "evaluate", "generate", "register")


def _stage_progress(ctx: JobContext, name: str) -> None:
    ctx.stage = name  # a failure from here on names this stage
    ctx.progress(STAGES.index(name), len(STAGES), name)


def make_snapshot(ctx: JobContext, cfg: RoundConfig, rdir: Path) -> dict[str, Any]:
    out = rdir / "snapshot"
    if out.is_dir():
        problems = verify_snapshot(out)
        if problems:
            raise JobFailed(f"the snapshot of an earlier attempt does not match its manifest: {'; '.join(problems)}")
        return read_manifest(out)
    remove_leftovers(rdir, "snapshot")
    try:
        if cfg.snapshot_from is not None:
            return copy_snapshot(snapshot_dir(get_settings().data_dir, cfg.snapshot_from), out)
        filters = SnapshotFilters(
            source=cfg.source,
            since=cfg.since,
            min_agreement=cfg.min_agreement,
            annotator_weighting=cfg.annotator_weighting,
            labels=cfg.labels,
        )
        from app.db import get_read_sessionmaker

        with get_read_sessionmaker()() as session:  # one read transaction: a consistent view on SQLite
            return write_snapshot(session, out=out, filters=filters, round_id=ctx.job_id)
    except (SnapshotError, WeightingError) as exc:
        raise JobFailed(str(exc)) from None


def train_reward(ctx: JobContext, cfg: RoundConfig, rdir: Path, lineage: Lineage) -> dict[str, Any]:
    train, held, n_train, n_eval = split_reward_data(
        rdir / "snapshot", rdir, cfg.rm_eval_fraction, use_rewrites=cfg.use_rewrites
    )
    init = lineage.reward_init
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
        flags["likelihood_model"] = lineage.sft.path
    lines = run_stage(ctx, stage="reward", trainer_stage="reward", out=rdir / "reward", flags=flags)
    return {"init_id": init.id, "train_pairs": n_train, "eval_pairs": n_eval, **last_values(lines)}


def data_size(manifest: dict[str, Any]) -> dict[str, int]:
    """What the policy stage's length is sized by (config.data_sized_flags): train prompts and preference pairs."""
    files = manifest["files"]
    return {"prompts": files["prompts.jsonl"]["rows"], "pairs": files["trl.jsonl"]["rows"]}


def sized_policy_flags(cfg: RoundConfig, size: dict[str, int]) -> dict[str, dict[str, Any]]:
    """The data-sized flags of the round's policy stages with their reasons (the job result, the report)."""
    return {
        stage: {name: {"value": f.value, "why": f.why} for name, f in cfg.sized_flags(stage, **size).items()}
        for stage in ALGO_STAGES[cfg.algo]
    }


def train_policy(
    ctx: JobContext, cfg: RoundConfig, rdir: Path, lineage: Lineage, size: dict[str, int]
) -> dict[str, Any]:
    out = rdir / "policy"
    start, reference = lineage.start, lineage.reference
    if cfg.algo == "ppo":
        flags = {
            **cfg.stage_flags("ppo", **size),
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
            **cfg.stage_flags("rs", **size),
            "policy": start.path,
            "judge": f"rm:{rdir / 'reward'}",
            "prompts": str(rdir / "snapshot" / "prompts.jsonl"),
            "out": str(best),
            "seed": cfg.seed,
        }
        picked = last_values(run_stage(ctx, stage="rs", trainer_stage="best-of-n", out=best, flags=flags))
        flags = {
            **cfg.stage_flags("sft", **size),
            "model": start.path,
            "data": str(best / "best.jsonl"),
            "out": str(out),
            "seed": cfg.seed,
        }
        lines = run_stage(ctx, stage="sft", trainer_stage="sft", out=out, flags=flags)
        # both steps count skips under the same metric name: keep best-of-n's apart
        return {
            "algo": "rs",
            **picked,
            **last_values(lines),
            "rs_skipped_too_long": picked.get(SKIPPED, 0),
            "rs_peak_memory_mb": picked.get(PEAK_MEMORY),
        }
    flags = {
        **cfg.stage_flags("dpo", **size),
        "policy": start.path,
        "ref": reference.path,
        "data": str(dpo_pairs_file(rdir, use_rewrites=cfg.use_rewrites)),
        "out": str(out),
        "seed": cfg.seed,
    }
    lines = run_stage(ctx, stage="dpo", trainer_stage="dpo", out=out, flags=flags)
    return {"algo": "dpo", **last_values(lines)}


def skipped_too_long(
    cfg: RoundConfig, reward: dict[str, Any], policy: dict[str, Any], evaluation: dict[str, Any], generated: int
) -> dict[str, int]:
    """What each step skipped as too long for the model (trainer.context_fit), for the round report."""
    ev = (evaluation.get("rm") or {}).get(SKIPPED) or {}
    counts = {"reward": reward.get(SKIPPED, 0)}
    if cfg.algo == "rs":
        counts.update({"best-of-n": policy.get("rs_skipped_too_long", 0), "sft": policy.get(SKIPPED, 0)})
    else:
        counts[cfg.algo] = policy.get(SKIPPED, 0)
    counts.update({"evaluate": ev.get("prompts", 0), "generate": generated})
    return {stage: int(n or 0) for stage, n in counts.items()}


def peak_memory(cfg: RoundConfig, reward: dict[str, Any], policy: dict[str, Any]) -> dict[str, float]:
    """Each training step's peak memory in MiB (trainer.outputs.peak_memory), for the round report."""
    peaks = {"reward": reward.get(PEAK_MEMORY)}
    if cfg.algo == "rs":
        peaks.update({"best-of-n": policy.get("rs_peak_memory_mb"), "sft": policy.get(PEAK_MEMORY)})
    else:
        peaks[cfg.algo] = policy.get(PEAK_MEMORY)
    return {stage: mb for stage, mb in peaks.items() if mb is not None}


def prompts_not_sampled(prompts: Path, samples: Path | None) -> int:
    """Prompts of the file with no sample in the output: the ones `trainer generate` skipped as too long."""
    if samples is None or not samples.is_file():
        return 0
    wanted = {str(row["prompt_id"]) for row in read_jsonl(prompts)}
    return len(wanted - {str(row["prompt_id"]) for row in read_jsonl(samples)})


def register_round(
    ctx: JobContext,
    cfg: RoundConfig,
    rdir: Path,
    lineage: Lineage,
    *,
    reward_metrics: dict,
    policy_metrics: dict,
    evaluation: dict,
    samples: Path | None,
) -> dict[str, Any]:
    """One transaction: the registry rows (both made current when the promotion gate passes, else neither) and the
    next tasks. Conditioned on this worker still holding the job, so a round taken over by another worker cannot
    register twice."""
    verdict = promotion_verdict(evaluation, cfg)
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
            flag = Task.flag_reason.is_not(None)
            counts = dict(
                session.execute(select(flag, func.count()).where(Task.job_id == ctx.job_id).group_by(flag)).all()
            )
            return {
                "policy_id": existing.id,
                "reward_model_id": reward_id,
                "tasks": counts.get(False, 0),
                "flagged_tasks": counts.get(True, 0),
                "promotion": verdict,
                "verdict_job_id": queued_verdict_job(session, ctx.job_id),
            }
        # each model lives in the round's directory of its kind's name
        reward, policy = (
            register_model(
                session,
                path=rdir / kind,
                name=f"{kind}-r{ctx.job_id}",
                kind=kind,
                stage="rlhf",
                parent_id=parent.id,
                job_id=ctx.job_id,
                metrics=metrics,
                check=False,
            )
            for kind, parent, metrics in (
                ("reward", lineage.reward_init, reward_metrics),
                ("policy", lineage.start, {**policy_metrics, "evaluation": evaluation["summary"]}),
            )
        )
        reward.round_job_id = policy.round_job_id = ctx.job_id
        if verdict["promoted"]:
            promote(session, model_id=reward.id)
            promote(session, model_id=policy.id)
        else:  # registered, kept for promotion by hand; the first model of a kind would otherwise become current
            reward.is_current = policy.is_current = False
            session.flush()
        tasks = 0
        if samples is not None:
            tasks = store_generations(
                session, samples_path=samples, request=next_task_request(cfg), model_id=policy.id, job_id=ctx.job_id
            )["tasks"]
        human = queue_round_verdict(session, ctx.job_id, cfg, policy.id, evaluation.get("policy_id_before"))
        flagged = store_flagged_tasks(
            session,
            evaluation.get("flagged", []),
            limit=cfg.flagged_tasks,
            overlap=cfg.next_tasks.overlap,
            sampling={
                "temperature": cfg.eval_temperature,
                "top_k": 0,
                "top_p": 1.0,
                "max_new_tokens": cfg.eval_max_new_tokens,
            },
            policy_id=policy.id,
            before_id=evaluation["policy_id_before"],
            job_id=ctx.job_id,
        )
        return {
            "policy_id": policy.id,
            "reward_model_id": reward.id,
            "tasks": tasks,
            "flagged_tasks": flagged,
            "promotion": verdict,
            **human,
        }


def queue_round_verdict(
    session, round_id: int, cfg: RoundConfig, policy_id: int, baseline_id: int | None
) -> dict[str, Any]:
    """The round's human verdict (`verdict_tasks` blind pairs of the new and the previous policy), queued in the
    register transaction: {"verdict_job_id"}, or with a note why none was (nothing to compare never fails a round)."""
    if cfg.verdict_tasks == 0:
        return {"verdict_job_id": None}
    try:
        job = queue_verdict(
            session,
            round_id=round_id,
            cfg=cfg,
            policy_id=policy_id,
            baseline_id=baseline_id,
            count=cfg.verdict_tasks,
        )
    except VerdictError as exc:
        return {"verdict_job_id": None, "verdict_note": str(exc)}
    return {"verdict_job_id": job.id}


def queued_verdict_job(session, round_id: int) -> int | None:
    """The verdict job an earlier attempt of this round queued with its registration (the latest generate jobs)."""
    for job in list_jobs(session, kind="generate"):
        if (job.config or {}).get("verdict", {}).get("round_id") == round_id:
            return job.id
    return None


def next_task_selection(session, cfg: RoundConfig, rdir: Path) -> tuple[str, list[str], str]:
    """(the selection the next tasks use, the reward models that score them, a note when it differs from the one
    asked): uncertainty under the round's new reward model; disagreement between it and the latest registered
    ones, which falls back to uncertainty while the new one is the only one."""
    select = cfg.next_tasks.select
    if select == "random":
        return "random", [], ""
    new = [str(rdir / "reward")]
    if select == "uncertainty":
        return "uncertainty", new, ""
    models = [m for m in list_models(session, kind="reward") if m.stage != "imported"]
    models.sort(key=lambda m: (not m.is_current, -m.id))  # the current one, then the newest
    earlier = [m.path for m in models[: DISAGREEMENT_MODELS - 1]]
    if not earlier:
        return "uncertainty", new, "disagreement needs two reward models and this round's is the first: uncertainty"
    return "disagreement", new + earlier, ""


def next_task_request(cfg: RoundConfig, select: str = "random") -> dict[str, Any]:
    """The next tasks as a generation request (app.services.generation's fields)."""
    nt = cfg.next_tasks
    return {
        "count": nt.prompts,
        "select": select,
        "oversample": nt.oversample,
        "random_share": nt.random_share,
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
    # the round's own count, or this deployment's (the worker's settings: the machine it trains on)
    ctx.set_train_processes(cfg.processes(get_settings().train_processes))
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
    reward_metrics = train_reward(ctx, cfg, rdir, lineage)
    _stage_progress(ctx, "policy")
    size = data_size(manifest)
    policy_metrics = train_policy(ctx, cfg, rdir, lineage, size)
    _stage_progress(ctx, "evaluate")
    evaluation = evaluate_round(ctx, cfg, rdir, lineage, policy_metrics)

    _stage_progress(ctx, "generate")
    samples = None
    not_sampled = 0
    selection = {"select": "random", "asked": cfg.next_tasks.select, "note": ""}
    if cfg.next_tasks.prompts > 0:
        with ctx.session() as session:
            select, reward_models, note = next_task_selection(session, cfg, rdir)
            pool = cfg.next_tasks.prompts * (cfg.next_tasks.oversample if select != "random" else 1)
            prompts = next_task_prompts(session, rdir, pool)
        selection.update(select=select, note=note)
        if prompts.stat().st_size > 0:
            samples = generate_samples(
                ctx,
                stage="generate",
                model=str(rdir / "policy"),
                prompts=prompts,
                out=rdir / "next_samples.jsonl",
                request=next_task_request(cfg, select),
                reward_models=reward_models,
            )
            # a selection keeps `prompts` of its pool: the rest were left out on purpose, not skipped
            not_sampled = prompts_not_sampled(prompts, samples) if select == "random" else 0

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
        # by pseudonymous id; absent when every pair counted alike (annotator_weighting none)
        "annotator_weights": manifest.get("annotator_weights"),
        "data_size": size,
        "sized_flags": sized_policy_flags(cfg, size),
        "parent_policy_id": lineage.start.id,
        # the policy the evaluation (and the human verdict) compared the new one with
        "baseline_policy_id": evaluation.get("policy_id_before"),
        "reference_id": lineage.reference.id,
        **registered,
        "reward": reward_metrics,
        "policy": policy_metrics,
        "evaluation": evaluation["summary"],
        "warnings": evaluation.get("warnings", []),
        "next_tasks_selection": selection,
        # the rewrites' pairs, apart from the choices and rankings (the snapshot's trl.jsonl)
        "rewrites": {"pairs": rewrite_pairs(rdir / "snapshot"), "used": cfg.use_rewrites},
        SKIPPED: skipped_too_long(cfg, reward_metrics, policy_metrics, evaluation, not_sampled),
        "peak_memory_mb": peak_memory(cfg, reward_metrics, policy_metrics),
    }
