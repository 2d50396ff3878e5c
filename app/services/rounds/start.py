"""Starting a round: the checks that can be made at once (config, a current policy, its memory plan when the GPU's
size is declared, enough data, none active), then the `round` job. The database refuses a second active round
whatever the caller checked."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import Adjudication, Annotation, Job, Prompt
from app.services.ai_calibration import ai_label_trust, untrusted_message
from app.services.annotator_weights import WeightingError, check_weighting
from app.services.jobs import enqueue_job
from app.services.rounds.config import ROUND_KIND, RoundConfig, RoundError, as_round_config
from app.services.rounds.lineage import current_policy
from app.services.rounds.memory_fit import memory_misfit
from app.services.snapshots import snapshot_dir
from app.services.training_labels import final_labels, training_labels
from app.settings import get_settings
from domain.vocabulary import FINISHED_JOB_STATUSES, JOB_STATUSES, ROUND_TASK_KINDS

ACTIVE_ROUND_INDEX = "uq_jobs_one_active_round"
ROUND_NUMBER_INDEX = "uq_jobs_round_number"
_ACTIVE_STATUSES = tuple(s for s in JOB_STATUSES if s not in FINISHED_JOB_STATUSES)


def preference_pairs(session: Session, *, config: RoundConfig) -> int:
    """Preference pairs the round's filters admit now (pairwise choices + all pairs of each ranking), train split;
    with labels=adjudicated, a task's final label in place of its human annotations. The same rows the snapshot's
    trl export will hold."""
    filters = {"source": config.source, "since": config.since}
    statements = [
        training_labels(
            Annotation.kind,
            Annotation.choice,
            Annotation.chosen_id,
            Annotation.ranking,
            labels=config.labels,
            **filters,
        ).where(Annotation.kind.in_(ROUND_TASK_KINDS))
    ]
    if config.labels == "adjudicated":
        final = (Adjudication.kind, Adjudication.choice, Adjudication.chosen_id, Adjudication.ranking)
        statements.append(final_labels(*final, **filters).where(Adjudication.kind.in_(ROUND_TASK_KINDS)))
    pairs = 0
    for stmt in statements:
        for kind, choice, chosen_id, ranking in session.execute(stmt.execution_options(yield_per=5000)):
            if kind == "pairwise":
                pairs += choice == "chosen" and chosen_id is not None
            elif ranking:
                pairs += len(ranking) * (len(ranking) - 1) // 2
    return pairs


def train_prompts(session: Session) -> int:
    """Train-split prompts a round's snapshot takes (its prompts.jsonl): what PPO and rejection sampling run on."""
    stmt = select(func.count()).select_from(Prompt).where(Prompt.split == "train", Prompt.retired_at.is_(None))
    return session.scalar(stmt) or 0


def too_little_data(pairs: int, config: RoundConfig) -> str | None:
    if pairs >= config.min_pairs:
        return None
    whose = {"all": "human and AI", "human": "human", "ai": "AI"}[config.source]
    return (
        f"too little data for a round: {pairs} preference pair(s) from {whose} annotations on train prompts, "
        f"at least {config.min_pairs} needed (min_pairs); collect more labels or lower min_pairs"
    )


def untrusted_ai_labels(session: Session, config: RoundConfig) -> str | None:
    """Why the round may not train on its AI labels (a judge uncalibrated or below RLHF_AI_MIN_AGREEMENT, with the
    figures), or None: no AI labels, all trusted, or the round allows untrusted ones."""
    if config.allow_untrusted_ai_labels:
        return None
    threshold = get_settings().ai_min_agreement
    trust = ai_label_trust(session, source=config.source, since=config.since, threshold=threshold)
    return untrusted_message(trust, threshold)


def active_round(session: Session) -> Job | None:
    return session.scalar(select(Job).where(Job.kind == ROUND_KIND, Job.status.in_(_ACTIVE_STATUSES)))


def next_round_number(session: Session) -> int:
    """Rounds are numbered 1, 2, 3 ... in their own sequence (a unique index refuses a number taken twice)."""
    return (session.scalar(select(func.max(Job.round_number))) or 0) + 1


def start_round(session: Session, *, config: dict[str, Any] | RoundConfig, created_by_id: int | None = None) -> Job:
    """Enqueue a round after checking what can be checked now: config, a current policy, enough data, none active.
    Flushes; the caller commits. The database refuses a second active round whatever the caller checked."""
    cfg = as_round_config(config)
    if cfg.snapshot_from is None:
        try:  # gold with no gold answers: refused now (409), not in the worker
            check_weighting(session, cfg.annotator_weighting)
        except WeightingError as exc:
            raise RoundError(str(exc), status=exc.status) from None
    policy = current_policy(session)
    if policy is None:
        raise RoundError("no current policy: register one first (rlhf models register ... --kind policy --stage sft)")
    gpu_memory_gb = get_settings().gpu_memory_gb
    if gpu_memory_gb is not None:
        message = memory_misfit(cfg, policy.path, gpu_memory_gb)
        if message:
            raise RoundError(message)
    if cfg.snapshot_from is None:
        message = too_little_data(preference_pairs(session, config=cfg), cfg)
        if message:
            raise RoundError(message)
        message = untrusted_ai_labels(session, cfg)
        if message:
            raise RoundError(message, status=409)
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
            job.round_number = next_round_number(session)
            session.flush()
    except IntegrityError as exc:
        # SQLite names the columns of the index it enforced, PostgreSQL the index
        names = (ACTIVE_ROUND_INDEX, ROUND_NUMBER_INDEX, "jobs.kind", "jobs.round_number")
        if any(name in str(exc.orig) for name in names):
            raise RoundError("another round was started at the same moment: one round at a time", status=409) from None
        raise
    return job
