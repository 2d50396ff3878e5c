"""Generation requests: a policy version samples K responses for a set of prompts, and the responses become tasks.

`request_generation` checks the request and enqueues a `generate` job. The job runs in the worker's child process:
it writes the chosen prompts to JSONL, runs `python -m trainer generate` (the web process never loads a model),
then stores one Generation row per sample with every sampling parameter and the sample's own seed (derived by
the trainer from the request seed, the prompt id and the sample index, so the same request and seed give the same
texts), and creates the tasks in the same transaction: when the job succeeds, the tasks exist.

Which prompts: those of the split (and tag, if given), in id order, the first `count`. Eval-split prompts get
generations (to evaluate policies) but never become tasks, a round's blind verdict aside (a generate job with a
`verdict` section: app.services.verdict). Tasks: `ranking` one task with the K responses, `rating` one task with
the K responses (each labelled good/bad), `pairwise` K/2 tasks of disjoint pairs in sample order (so K must be
even).

Active selection (`select`: uncertainty or disagreement; random is the default): the job asks the trainer for
`oversample` times more prompts and candidates than it shows, scored by the current reward model (uncertainty) or
by the latest reward models (disagreement: the current one and the ones before it, at least two); the trainer keeps
the `count` most informative prompts and, within each, the most informative pairs or rankings, with a
`random_share` of the prompts drawn at random (unbiased data for evaluation). Each task stores its choice and score
(`selection`, `selection_score`), and the `rich` export carries them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.inputs import DbId, Text
from app.jobs import JobFailed, job_kind
from app.models import Generation, Job, ModelVersion, Prompt, Task, TaskPosition, utcnow
from app.services.errors import ServiceError, validation_message
from app.services.jobs import enqueue_job, list_jobs
from app.services.models_registry import list_models
from app.services.tasks import PRIORITY_MAX, PRIORITY_MIN
from domain.sampling import RESPONSES_PER_PROMPT_MAX, RESPONSES_PER_PROMPT_MIN, SEED_LIMIT, sampling_problem
from domain.vocabulary import SELECTIONS, SPLIT_FILTERS, TASK_KINDS, one_of

MAX_PROMPTS = 100_000
MAX_OVERLAP = 1000
# Selection: candidates (prompts, and responses per prompt) sampled per one shown, and the share of random tasks
# kept so the labels still hold an unbiased sample for evaluation.
DEFAULT_OVERSAMPLE = 4
MAX_OVERSAMPLE = 8
DEFAULT_RANDOM_SHARE = 0.2
# Disagreement compares the current reward model with the ones before it: this many at most.
DISAGREEMENT_MODELS = 3


class GenerationError(ServiceError):
    """Bad generation request; the message is safe to show."""


class GenerationRequest(BaseModel):
    """A request as the admin page, the CLI, the API and the job's stored config take it (defaults shown in each).
    Building one checks it: an invalid request never exists."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: DbId | None = Field(None, description="policy model id; default the current policy")
    split: str = "train"
    tag: Text | None = None
    count: int = Field(100, description="how many prompts (the first ones of the split, in id order)")
    num_samples: int = Field(2, description="K responses per prompt, 2..8")
    temperature: float = 1.0
    top_k: int = Field(0, description="0: off")
    top_p: float = Field(1.0, description="1.0: off")
    max_new_tokens: int = 64
    seed: int = 0
    task_kind: str = "pairwise"
    overlap: int = 1
    priority: int = 0
    select: str = Field(
        "random",
        description="random | uncertainty (the current reward model's P(a beats b) nearest 0.5) | disagreement "
        "(between the latest reward models)",
    )
    oversample: int = Field(
        DEFAULT_OVERSAMPLE,
        description=f"selection: candidates sampled per prompt and response shown, 1..{MAX_OVERSAMPLE}",
    )
    random_share: float = Field(DEFAULT_RANDOM_SHARE, description="selection: share of prompts drawn at random, 0..1")

    @model_validator(mode="after")
    def _check(self) -> GenerationRequest:
        problem = one_of("split", self.split, SPLIT_FILTERS) or one_of("task kind", self.task_kind, TASK_KINDS)
        if not problem and not 1 <= self.count <= MAX_PROMPTS:
            problem = f"count must be 1..{MAX_PROMPTS}"
        if not problem and not RESPONSES_PER_PROMPT_MIN <= self.num_samples <= RESPONSES_PER_PROMPT_MAX:
            problem = f"responses per prompt (K) must be {RESPONSES_PER_PROMPT_MIN}..{RESPONSES_PER_PROMPT_MAX}"
        if not problem and self.task_kind == "pairwise" and self.num_samples % 2:
            problem = "pairwise tasks take the K responses two by two: K must be even"
        problem = problem or sampling_problem(
            temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, max_new_tokens=self.max_new_tokens
        )
        if not problem and not 0 <= self.seed < SEED_LIMIT:
            problem = "seed must be a non-negative 64-bit integer"
        if not problem and not 1 <= self.overlap <= MAX_OVERLAP:
            problem = f"overlap must be 1..{MAX_OVERLAP}"
        if not problem and not PRIORITY_MIN <= self.priority <= PRIORITY_MAX:
            problem = f"priority must be {PRIORITY_MIN}..{PRIORITY_MAX}"
        problem = problem or one_of("select", self.select, SELECTIONS)
        if not problem and not 1 <= self.oversample <= MAX_OVERSAMPLE:
            problem = f"oversample must be 1..{MAX_OVERSAMPLE}"
        if not problem and not 0 <= self.random_share <= 1:
            problem = "random share must be in [0, 1]"
        if not problem and self.select != "random" and self.split != "train":
            problem = "select picks what people label: only train-split prompts become tasks (split train)"
        if problem:
            raise ValueError(problem)
        return self


def parse_generation_request(values: Mapping[str, Any]) -> GenerationRequest:
    """A request from loose values (a form's strings, CLI options, a stored job config); GenerationError if bad."""
    try:
        return GenerationRequest.model_validate(dict(values))
    except ValidationError as exc:
        raise GenerationError(validation_message(exc)) from None


@dataclass
class GenerationChoices:
    """What the generation form offers: the policies that can generate, and the latest generation jobs."""

    policies: list[ModelVersion]
    jobs: list[Job]


def generation_choices(session: Session, *, latest_jobs: int = 20) -> GenerationChoices:
    policies = [m for m in list_models(session, kind="policy") if m.stage != "imported"]
    return GenerationChoices(policies=policies, jobs=list_jobs(session, kind="generate", limit=latest_jobs))


def resolve_policy(session: Session, model_id: int | None) -> ModelVersion:
    if model_id is None:
        model = session.scalar(
            select(ModelVersion).where(ModelVersion.kind == "policy", ModelVersion.is_current.is_(True))
        )
        if model is None:
            raise GenerationError("no current policy: register one (`rlhf models register`) or give a model id")
        return model
    model = session.get(ModelVersion, model_id)
    if model is None or model.kind != "policy":
        raise GenerationError(f"no policy model {model_id}", status=404)
    if model.stage == "imported":
        raise GenerationError("the `imported` entry stands for imported responses; it cannot generate")
    return model


def selection_reward_models(session: Session, select: str) -> list[ModelVersion]:
    """The reward models that score candidates: the current one for uncertainty; for disagreement the current one
    and the latest before it (rounds register one each), DISAGREEMENT_MODELS at most. Refused when there are too
    few: a selection that cannot be made is never silently random."""
    if select == "random":
        return []
    models = [m for m in list_models(session, kind="reward") if m.stage != "imported"]
    current = [m for m in models if m.is_current]
    if not current:
        raise GenerationError(f"select {select} scores candidates with the current reward model: there is none yet")
    if select == "uncertainty":
        return current
    others = sorted((m for m in models if not m.is_current), key=lambda m: m.id, reverse=True)
    chosen = (current + others)[:DISAGREEMENT_MODELS]
    if len(chosen) < 2:
        raise GenerationError(
            f"select disagreement compares reward models: {len(chosen)} registered, at least 2 needed "
            "(use uncertainty, or run another round)"
        )
    return chosen


def request_generation(session: Session, *, request: GenerationRequest, created_by_id: int | None = None):
    """Enqueue a `generate` job for a (checked) request (flushes; the caller commits). Returns the Job."""
    model = resolve_policy(session, request.model_id)
    reward_models = selection_reward_models(session, request.select)
    if not select_prompt_ids(session, request=request, limit=1):
        raise GenerationError("no prompts match (split/tag): import prompts first")
    config = {**request.model_dump(), "model_id": model.id, "reward_model_ids": [m.id for m in reward_models]}
    return enqueue_job(session, kind="generate", config=config, created_by_id=created_by_id, priority=request.priority)


def select_prompt_ids(session: Session, *, request: GenerationRequest, limit: int | None = None) -> list[int]:
    stmt = select(Prompt.id, Prompt.tags).where(Prompt.retired_at.is_(None)).order_by(Prompt.id)
    if request.split != "all":
        stmt = stmt.where(Prompt.split == request.split)
    # selecting: a pool of `oversample` times the prompts, of which the trainer keeps `count`
    pool = request.count * (request.oversample if request.select != "random" else 1)
    wanted = pool if limit is None else limit
    ids: list[int] = []
    for batch in session.execute(stmt.execution_options(yield_per=5000)).partitions():
        for prompt_id, tags in batch:
            if request.tag is None or request.tag in (tags or []):
                ids.append(prompt_id)
                if len(ids) >= wanted:
                    return ids
    return ids


def write_prompt_file(session: Session, *, prompt_ids: list[int], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for start in range(0, len(prompt_ids), 2000):
            chunk = prompt_ids[start : start + 2000]
            rows = session.execute(
                select(Prompt.id, Prompt.text, Prompt.messages).where(Prompt.id.in_(chunk)).order_by(Prompt.id)
            )
            for pid, text, messages in rows:
                line = {"prompt_id": pid, "messages": messages} if messages else {"prompt_id": pid, "prompt": text}
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")


def trainer_args(
    *, model_path: str, prompts: Path, out: Path, request: dict[str, Any], reward_models: list[str] = ()
) -> list[str]:
    return [
        "generate",
        "--model",
        model_path,
        "--prompts",
        str(prompts),
        "--out",
        str(out),
        "--num-samples",
        str(request["num_samples"]),
        "--temperature",
        str(request["temperature"]),
        "--top-k",
        str(request["top_k"]),
        "--top-p",
        str(request["top_p"]),
        "--max-new-tokens",
        str(request["max_new_tokens"]),
        "--seed",
        str(request["seed"]),
        *selection_args(request, reward_models),
    ]


def selection_args(request: dict[str, Any], reward_models: list[str]) -> list[str]:
    """`trainer generate`'s selection flags: none for a random request (the first samples, as ever)."""
    select = request.get("select", "random")
    if select == "random":
        return []
    return [
        "--select",
        select,
        "--reward-model",
        *reward_models,
        "--oversample",
        str(request["oversample"]),
        "--group-size",
        "2" if request["task_kind"] == "pairwise" else "0",
        "--keep-prompts",
        str(request["count"]),
        "--random-share",
        str(request["random_share"]),
    ]


def _task_groups(kind: str, records: list[dict], generation_ids: list[int]) -> list[tuple[list[int], dict]]:
    """(generation ids, the group's first record) per task: the trainer's `group` when it selected, else pairs in
    sample order (pairwise) or all K together."""
    if records and "group" in records[0]:
        groups: dict[int, list[int]] = {}
        firsts: dict[int, dict] = {}
        for rec, gen_id in zip(records, generation_ids):
            groups.setdefault(rec["group"], []).append(gen_id)
            firsts.setdefault(rec["group"], rec)
        return [(groups[g], firsts[g]) for g in sorted(groups)]
    if kind == "pairwise":
        return [(generation_ids[i : i + 2], records[i]) for i in range(0, len(generation_ids) - 1, 2)]
    return [(generation_ids, records[0])]


def store_generations(
    session: Session, *, samples_path: Path, request: dict[str, Any], model_id: int, job_id: int | None
) -> dict[str, int]:
    """Generation rows for every sample, tasks for the train-split prompts. Flushes; the caller commits."""
    by_prompt: dict[int, list[dict]] = {}
    with open(samples_path, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            by_prompt.setdefault(int(rec["prompt_id"]), []).append(rec)
    splits = {}
    ids = sorted(by_prompt)
    for prompt_id in ids:  # sample order, or the trainer's group order when it selected
        by_prompt[prompt_id].sort(key=lambda r: (r.get("group", 0), 0 if "group" in r else r["sample"]))
    for start in range(0, len(ids), 2000):
        splits.update(
            session.execute(select(Prompt.id, Prompt.split).where(Prompt.id.in_(ids[start : start + 2000]))).all()
        )
    now = utcnow()
    rows = [
        {
            "prompt_id": prompt_id,
            "model_version_id": model_id,
            "text": rec["text"],
            "temperature": rec["temperature"],
            "top_k": rec["top_k"],
            "top_p": rec["top_p"],
            "max_new_tokens": rec["max_new_tokens"],
            "seed": rec["seed"],
            "finish_reason": rec["finish_reason"],
            "num_tokens": rec["num_tokens"],
            "logprob": rec["logprob"],
            "source": "model",
            "job_id": job_id,
            "created_at": now,
        }
        for prompt_id in ids
        for rec in by_prompt[prompt_id]
    ]
    new_ids: list[int] = []
    for start in range(0, len(rows), 1000):
        new_ids += session.scalars(
            insert(Generation).returning(Generation.id, sort_by_parameter_order=True), rows[start : start + 1000]
        ).all()
    # Tasks (and their positions) in bulk too: a request may cover 100k prompts.
    groups: list[tuple[int, list[int], dict]] = []
    position = 0
    for prompt_id in ids:
        gen_ids = new_ids[position : position + len(by_prompt[prompt_id])]
        position += len(gen_ids)
        if splits.get(prompt_id) != "train":
            continue  # held out: evaluated, never annotated for training
        groups += [
            (prompt_id, group, first)
            for group, first in _task_groups(request["task_kind"], by_prompt[prompt_id], gen_ids)
        ]
    meta = {"request_seed": request["seed"], "generation_job": job_id}
    for start in range(0, len(groups), 1000):
        chunk = groups[start : start + 1000]
        task_ids = session.scalars(
            insert(Task).returning(Task.id, sort_by_parameter_order=True),
            [
                {
                    "prompt_id": prompt_id,
                    "kind": request["task_kind"],
                    "overlap": request["overlap"],
                    "priority": request.get("priority", 0),
                    "done_count": 0,
                    "completed": False,
                    "meta": meta,
                    "job_id": job_id,
                    "created_at": now,
                    "selection": first.get("selection", "random"),
                    "selection_score": first.get("selection_score"),
                }
                for prompt_id, _, first in chunk
            ],
        ).all()
        session.execute(
            insert(TaskPosition),
            [
                {"task_id": task_id, "position": i, "generation_id": g}
                for task_id, (_, group, _) in zip(task_ids, chunk)
                for i, g in enumerate(group)
            ],
        )
    tasks = len(groups)
    generations = len(new_ids)
    session.flush()
    return {"prompts": len(ids), "generations": generations, "tasks": tasks}


@job_kind("generate")
def run_generate(ctx) -> dict[str, Any]:
    """The `generate` job: prompts -> `python -m trainer generate` -> generations and tasks (one transaction)."""
    request = ctx.config
    if request.get("verdict"):  # a round's human verdict: two policies on the same eval prompts
        from app.services.verdict import run_verdict  # it builds on this module

        return run_verdict(ctx)
    with ctx.session() as session:
        if session.scalar(select(Generation.id).where(Generation.job_id == ctx.job_id).limit(1)) is not None:
            # An earlier attempt stored everything before it was lost: do not store twice.
            return {"resumed": True, **_counts(session, ctx.job_id)}
        model = session.get(ModelVersion, request["model_id"])
        if model is None:
            raise JobFailed(f"policy model {request['model_id']} no longer exists")
        model_path = model.path
        reward_paths = []
        for reward_id in request.get("reward_model_ids") or []:
            reward = session.get(ModelVersion, reward_id)
            if reward is None:
                raise JobFailed(f"reward model {reward_id} no longer exists")
            reward_paths.append(reward.path)
        prompt_ids = select_prompt_ids(
            session,
            request=parse_generation_request({k: v for k, v in request.items() if k in GenerationRequest.model_fields}),
        )
        if not prompt_ids:
            raise JobFailed("no prompts match the request")
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        prompts_path = ctx.output_dir / "prompts.jsonl"
        write_prompt_file(session, prompt_ids=prompt_ids, path=prompts_path)
    samples_path = ctx.output_dir / f"samples-{ctx.attempt}.jsonl"
    samples_path.unlink(missing_ok=True)
    ctx.progress(0, len(prompt_ids), f"generating {request['num_samples']} responses for {len(prompt_ids)} prompts")
    ctx.run_trainer(
        trainer_args(
            model_path=model_path, prompts=prompts_path, out=samples_path, request=request, reward_models=reward_paths
        ),
        stage="generate",
    )
    with ctx.session() as session:
        counts = store_generations(
            session, samples_path=samples_path, request=request, model_id=request["model_id"], job_id=ctx.job_id
        )
    # prompts with no sample: skipped as too long for the model's context (trainer.context_fit); a selection keeps
    # `count` of its pool of candidate prompts, so only a shortfall below `count` can be counted as skipped
    kept_at_most = request["count"] if request.get("select", "random") != "random" else len(prompt_ids)
    skipped = max(0, min(kept_at_most, len(prompt_ids)) - counts["prompts"])
    ctx.progress(
        len(prompt_ids),
        len(prompt_ids),
        f"{counts['generations']} generations, {counts['tasks']} tasks"
        + (f", {skipped} prompts skipped as too long for the model" if skipped else ""),
    )
    return {**counts, "skipped_too_long": skipped, "samples_file": str(samples_path)}


def _counts(session: Session, job_id: int) -> dict[str, int]:
    from sqlalchemy import func

    return {
        "generations": session.scalar(select(func.count()).select_from(Generation).where(Generation.job_id == job_id)),
        "tasks": session.scalar(select(func.count()).select_from(Task).where(Task.job_id == job_id)),
    }
