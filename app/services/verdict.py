"""A round's human verdict: people judge, blind, the round's new policy beside the policy it was evaluated against,
on the same eval prompts, and their win-rate stands next to the reward model's and the gold judge's.

`queue_verdict` (automatic after a round, `verdict_tasks` of them) and `request_verdict` (by hand: the round
page's button, `POST /api/v1/rounds/{id}/verdict`) enqueue a `generate` job with a `verdict` section. The job
(`run_verdict`, called by the generate job) samples one response per eval prompt from each policy with the same
settings and seed (the round's eval temperature and length; the trainer derives each sample's seed from the
request seed and the prompt, so both policies draw the same seeds), and makes one pairwise task per prompt
marked `tasks.verdict_round_id`. Blind: which response is which policy is stored only on the generation rows,
which nothing an annotator reaches reads; the two are stored in a seeded random order (the seed in the task's
meta), so neither the position nor the generation id says which is new; and each annotator sees their own shuffle
as for any task. Eval-split prompts: exports, snapshots and AI labelling take train prompts only, so a verdict is
never training data.

`human_verdict` counts the live human judgements: the share won by the new policy, ties and both-bad counting
half, with its Wilson 95% interval."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.jobs import JobFailed
from app.models import Annotation, Generation, Job, ModelVersion, Task, TaskPosition, User, utcnow
from app.services.errors import Conflict, ServiceError
from app.services.generation import GenerationRequest, select_prompt_ids, trainer_args, write_prompt_file
from app.services.gold import wilson_interval
from app.services.jobs import enqueue_job
from app.services.rounds.config import RoundConfig, parse_round_config
from app.services.rounds.listing import get_round
from app.services.snapshots import round_dir
from app.settings import get_settings
from domain.vocabulary import FINISHED_JOB_STATUSES

VERDICT_MAX_TASKS = 10_000


class VerdictError(ServiceError):
    """A verdict that cannot be queued; the message is safe to show."""


def round_policies(session: Session, job: Job) -> tuple[int | None, int | None]:
    """(the round's new policy, the policy its evaluation compared it with); None where the round has none."""
    result = job.result or {}
    baseline = result.get("baseline_policy_id")
    if baseline is None and result.get("policy_id") is not None:  # a round from before the field: its evaluation
        try:
            evaluation = json.loads((round_dir(get_settings().data_dir, job.id) / "evaluation.json").read_text())
            baseline = evaluation.get("policy_id_before")
        except (OSError, ValueError):
            baseline = None
    return result.get("policy_id"), baseline


def verdict_request(cfg: RoundConfig, count: int) -> GenerationRequest:
    """The sampling of a verdict: the round's evaluation settings, one response per eval prompt and policy."""
    return GenerationRequest(
        split="eval",
        count=count,
        num_samples=2,  # the request's own check wants pairs; the job samples one per policy
        temperature=cfg.eval_temperature,
        max_new_tokens=cfg.eval_max_new_tokens,
        seed=cfg.seed,
        task_kind="pairwise",
        overlap=cfg.next_tasks.overlap,
    )


def queue_verdict(
    session: Session,
    *,
    round_id: int,
    cfg: RoundConfig,
    policy_id: int,
    baseline_id: int | None,
    count: int,
    created_by_id: int | None = None,
) -> Job:
    """Enqueue the verdict's generate job (flushes; the caller commits). VerdictError when there is nothing to
    compare (no previous policy, no eval prompts)."""
    if baseline_id is None or baseline_id == policy_id:
        raise VerdictError(f"round {round_id} has no previous policy to put its new one beside")
    for model_id in (policy_id, baseline_id):
        model = session.get(ModelVersion, model_id)
        if model is None or model.kind != "policy":
            raise VerdictError(f"policy {model_id} of round {round_id} no longer exists", status=409)
    if not 1 <= count <= VERDICT_MAX_TASKS:
        raise VerdictError(f"verdict tasks must be 1..{VERDICT_MAX_TASKS}")
    request = verdict_request(cfg, count)
    if not select_prompt_ids(session, request=request, limit=1):
        raise VerdictError('no eval-split prompts to compare the policies on: import some with split "eval"')
    config = {
        **request.model_dump(),
        "model_id": policy_id,
        "reward_model_ids": [],
        "verdict": {"round_id": round_id, "baseline_id": baseline_id},
    }
    return enqueue_job(session, kind="generate", config=config, created_by_id=created_by_id)


def request_verdict(
    session: Session, round_id: int, *, count: int | None = None, created_by_id: int | None = None
) -> Job:
    """Queue a succeeded round's verdict by hand (`count` eval prompts, default the round's `verdict_tasks`, or 32
    when the round set 0). Refused (409) while one is being generated or when the round already has its tasks."""
    job = get_round(session, round_id)
    if job.status != "succeeded":
        raise Conflict(f"round {round_id} is {job.status}: only a succeeded round has a new policy to judge")
    policy_id, baseline_id = round_policies(session, job)
    pending = (job.result or {}).get("verdict_job_id")
    earlier = session.get(Job, pending) if pending is not None else None
    if earlier is not None and earlier.status not in FINISHED_JOB_STATUSES:
        raise Conflict(f"round {round_id}'s verdict is being generated (job {earlier.id})")
    existing = session.scalar(select(func.count()).select_from(Task).where(Task.verdict_round_id == round_id))
    if existing:
        raise Conflict(f"round {round_id} already has {existing} verdict tasks")
    cfg = parse_round_config(job.config)
    count = count or cfg.verdict_tasks or RoundConfig.model_fields["verdict_tasks"].default
    verdict_job = queue_verdict(
        session,
        round_id=round_id,
        cfg=cfg,
        policy_id=policy_id,
        baseline_id=baseline_id,
        count=count,
        created_by_id=created_by_id,
    )
    job.result = {**(job.result or {}), "verdict_job_id": verdict_job.id}
    session.flush()
    return verdict_job


def _read_samples(path: Path) -> dict[int, dict[str, Any]]:
    """The first sample of each prompt in a `trainer generate` output."""
    out: dict[int, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            out.setdefault(int(rec["prompt_id"]), rec)
    return out


def store_verdict(
    session: Session,
    *,
    new_samples: Path,
    baseline_samples: Path,
    request: dict[str, Any],
    job_id: int | None,
) -> dict[str, int]:
    """The two responses of every prompt both policies answered, and one pairwise task per prompt with them in a
    seeded random order (generation ids in that order too). Flushes; the caller commits."""
    verdict = request["verdict"]
    new, old = _read_samples(new_samples), _read_samples(baseline_samples)
    prompt_ids = sorted(set(new) & set(old))
    rng = random.Random(order_seed(request))
    now = utcnow()
    for prompt_id in prompt_ids:
        pair = [(request["model_id"], new[prompt_id]), (verdict["baseline_id"], old[prompt_id])]
        rng.shuffle(pair)
        gens = [
            Generation(
                prompt_id=prompt_id,
                model_version_id=model_id,
                text=rec["text"],
                temperature=rec["temperature"],
                top_k=rec["top_k"],
                top_p=rec["top_p"],
                max_new_tokens=rec["max_new_tokens"],
                seed=rec["seed"],
                finish_reason=rec["finish_reason"],
                num_tokens=rec["num_tokens"],
                logprob=rec["logprob"],
                source="model",
                job_id=job_id,
                created_at=now,
            )
            for model_id, rec in pair
        ]
        session.add_all(gens)
        task = Task(
            prompt_id=prompt_id,
            kind="pairwise",
            overlap=request["overlap"],
            priority=request.get("priority", 0),
            meta={"request_seed": request["seed"], "generation_job": job_id, "order_seed": order_seed(request)},
            job_id=job_id,
            created_at=now,
            selection="random",
            verdict_round_id=verdict["round_id"],
        )
        session.add(task)
        session.flush()
        session.add_all(TaskPosition(task_id=task.id, position=i, generation_id=g.id) for i, g in enumerate(gens))
    session.flush()
    return {"prompts": len(prompt_ids), "generations": 2 * len(prompt_ids), "tasks": len(prompt_ids)}


def order_seed(request: dict[str, Any]) -> str:
    """The seed of the verdict's order (recorded on each task, so the order can be redrawn)."""
    return f"verdict:{request['verdict']['round_id']}:{request['seed']}"


def run_verdict(ctx) -> dict[str, Any]:
    """The generate job of a verdict: the eval prompts, one sample from each policy (same settings and seed),
    then the generations and tasks in one transaction."""
    request = ctx.config
    verdict = request["verdict"]
    with ctx.session() as session:
        done = session.scalar(select(func.count()).select_from(Task).where(Task.job_id == ctx.job_id))
        if done:  # an earlier attempt stored everything before it was lost: do not store twice
            return {"resumed": True, "tasks": done, "round_id": verdict["round_id"]}
        paths = {}
        for side, model_id in (("new", request["model_id"]), ("baseline", verdict["baseline_id"])):
            model = session.get(ModelVersion, model_id)
            if model is None:
                raise JobFailed(f"policy model {model_id} no longer exists")
            paths[side] = model.path
        fields = {k: v for k, v in request.items() if k in GenerationRequest.model_fields}
        prompt_ids = select_prompt_ids(session, request=GenerationRequest(**fields))
        if not prompt_ids:
            raise JobFailed("no eval-split prompts to compare the policies on")
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        prompts_path = ctx.output_dir / "prompts.jsonl"
        write_prompt_file(session, prompt_ids=prompt_ids, path=prompts_path)
    ctx.progress(0, 2, f"sampling {len(prompt_ids)} eval prompts from both policies")
    samples = {}
    for i, (side, path) in enumerate(paths.items()):
        out = ctx.output_dir / f"verdict-{side}-{ctx.attempt}.jsonl"
        out.unlink(missing_ok=True)
        ctx.run_trainer(
            trainer_args(model_path=path, prompts=prompts_path, out=out, request={**request, "num_samples": 1}),
            stage=f"generate-{side}",
        )
        samples[side] = out
        ctx.progress(i + 1, 2, f"sampled the {side} policy")
    with ctx.session() as session:
        counts = store_verdict(
            session,
            new_samples=samples["new"],
            baseline_samples=samples["baseline"],
            request=request,
            job_id=ctx.job_id,
        )
    skipped = len(prompt_ids) - counts["prompts"]
    ctx.progress(2, 2, f"{counts['tasks']} verdict tasks" + (f", {skipped} prompts too long" if skipped else ""))
    return {**counts, "round_id": verdict["round_id"], "skipped_too_long": skipped}


def human_verdict(session: Session, job: Job) -> dict[str, Any]:
    """The round's human win-rate: live human judgements of its verdict tasks (annotators whose labels are excluded
    left out), the share won by the new policy with ties and both-bad counting half, and its Wilson 95% interval.
    Also the tasks, and the generating job while there is one."""
    policy_id, baseline_id = round_policies(session, job)
    tasks = select(Task.id).where(Task.verdict_round_id == job.id, Task.retired_at.is_(None))
    n_tasks = session.scalar(select(func.count()).select_from(tasks.subquery())) or 0
    winners = session.execute(
        select(Annotation.choice, Generation.model_version_id)
        .join(User, User.id == Annotation.user_id)
        .outerjoin(Generation, Generation.id == Annotation.chosen_id)
        .where(
            Annotation.task_id.in_(tasks),
            Annotation.source == "human",
            Annotation.deleted_at.is_(None),
            Annotation.kind == "pairwise",
            User.labels_excluded.is_(False),
        )
    ).all()
    wins = sum(1 for choice, model in winners if choice == "chosen" and model == policy_id)
    losses = sum(1 for choice, model in winners if choice == "chosen" and model != policy_id)
    ties = len(winners) - wins - losses
    out: dict[str, Any] = {
        "policy_id": policy_id,
        "baseline_id": baseline_id,
        "tasks": n_tasks,
        "comparisons": len(winners),
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "win_rate": None,
        "low": None,
        "high": None,
        "job_id": (job.result or {}).get("verdict_job_id"),
        "job_status": None,
    }
    if out["job_id"] is not None:
        verdict_job = session.get(Job, out["job_id"])
        out["job_status"] = verdict_job.status if verdict_job is not None else None
    if winners:
        won = wins + ties / 2
        out["win_rate"] = won / len(winners)
        out["low"], out["high"] = wilson_interval(won, len(winners))
    return out
