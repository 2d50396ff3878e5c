"""AI feedback (RLAIF): the `label-ai` job labels pending tasks with an AI judge.

Judges:
  reward_model  a reward model (the current one by default): each response scored, the best chosen, a ranking
                by score; strength from the score gap.
  lm            any local causal LM, prompted to choose: the prompt and the responses labelled A, B, ... are
                followed by "Which response is better? Answer:", and the log-probability of each label token
                (" A", " B", ...) is the response's score. Each task is asked twice, the responses in the shown
                order and reversed, and the two log-probabilities are summed, so the judge's position bias cancels
                (Zheng et al. 2023, "Judging LLM-as-a-judge").

Labels are annotations with source `ai`, under the judge's own annotator identity (users.is_ai, no password),
one per task and judge, idempotent (a retried job skips what it labelled). They never count toward a task's
overlap (only human annotations do), and exports and rounds include or exclude them with their source filter.

Before labelling, the job calibrates the judge: it scores a seeded sample of tasks people have labelled, stores
none of those labels, and records its agreement with them per task kind (app/services/ai_calibration.py), which a
round checks before it trains on AI labels.

Scoring runs in the worker's child process (the job's process), never in the web process.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.jobs.context import JobContext
from app.jobs.registry import JobFailed, job_kind
from app.models import Annotation, Job, ModelVersion, Prompt, Task, TaskPosition, User
from app.services.ai_calibration import (
    DEFAULT_CALIBRATION_TASKS,
    agreement_by_kind,
    human_labelled_sample,
    store_calibration,
)
from app.services.errors import ServiceError
from app.services.jobs import enqueue_job
from app.services.prompts import prompt_display_text
from app.services.users import create_user

LABEL_AI_KIND = "label-ai"
LETTERS = "ABCDEFGH"  # tasks have at most 8 responses
BATCH = 16
# Strength (1 slightly, 2 clearly, 3 much better) from the judge's confidence.
RM_GAP_STRENGTH = (0.5, 1.5)  # reward gap between the best two responses
LM_PROB_STRENGTH = (0.65, 0.85)  # the chosen label's share of probability mass between the best two


class LabelAIError(ServiceError):
    """A label-ai request that cannot start; the message is safe to show."""


class LabelAIConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    judge: Literal["reward_model", "lm"] = "reward_model"
    model_id: int | None = Field(None, description="Registry model (default: the current reward model / policy).")
    path: str = Field("", description="Or any local model directory (a causal LM for the lm judge).")
    limit: int = Field(1000, ge=1, le=1_000_000, description="At most this many pending tasks.")
    annotator: str = Field("", max_length=64, description="The AI annotator's username (default from the judge).")
    calibration: int = Field(
        DEFAULT_CALIBRATION_TASKS,
        ge=0,
        le=100_000,
        description="First score this many tasks people have labelled (not stored as labels) and record the judge's "
        "agreement with them per task kind; 0 = no calibration.",
    )
    seed: int = Field(0, description="Seed of the calibration's sample of human-labelled tasks.")


@dataclass
class JudgeModel:
    judge: str
    path: str
    name: str


def parse_label_ai_config(raw: dict[str, Any] | None) -> LabelAIConfig:
    try:
        return LabelAIConfig.model_validate(raw or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise LabelAIError(f"{'.'.join(str(p) for p in first['loc']) or 'config'}: {first['msg']}") from None


def resolve_judge(session: Session, cfg: LabelAIConfig) -> JudgeModel:
    if cfg.path:
        return JudgeModel(cfg.judge, cfg.path, cfg.path.rstrip("/").rsplit("/", 1)[-1])
    kind = "reward" if cfg.judge == "reward_model" else "policy"
    if cfg.model_id is not None:
        model = session.get(ModelVersion, cfg.model_id)
        if model is None:
            raise LabelAIError(f"no model {cfg.model_id}", status=404)
        if cfg.judge == "reward_model" and model.kind != "reward":
            raise LabelAIError(f"model {model.id} is a {model.kind} model; the reward_model judge needs a reward model")
    else:
        model = session.scalar(select(ModelVersion).where(ModelVersion.kind == kind, ModelVersion.is_current))
        if model is None:
            raise LabelAIError(f"no current {kind} model: give model_id or path")
    if not model.path:
        raise LabelAIError(f"model {model.id} has no files (imported responses)")
    return JudgeModel(cfg.judge, model.path, f"{model.name}#{model.id}")


def ai_annotator(session: Session, *, username: str) -> User:
    """The judge's annotator identity: created once, is_ai, no password (it cannot log in)."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        user = create_user(session, username=username, role="annotator", password=None, is_ai=True)
    elif not user.is_ai:
        raise LabelAIError(f"user {username!r} exists and is a person, not an AI judge")
    return user


def default_annotator(judge: JudgeModel) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in judge.name.lower()).strip("-")
    return f"ai-{'rm' if judge.judge == 'reward_model' else 'lm'}-{slug}"[:64]


def start_label_ai(
    session: Session, *, config: dict[str, Any] | LabelAIConfig, created_by_id: int | None = None
) -> Job:
    """Check the request (judge model exists) and enqueue the `label-ai` job. Flushes; the caller commits."""
    cfg = config if isinstance(config, LabelAIConfig) else parse_label_ai_config(config)
    resolve_judge(session, cfg)
    return enqueue_job(session, kind=LABEL_AI_KIND, config=cfg.model_dump(), created_by_id=created_by_id)


# ---- the tasks ------------------------------------------------------------------------------------------------


@dataclass
class PendingTask:
    task_id: int
    kind: str
    prompt: str
    generation_ids: list[int]
    texts: list[str]
    messages: list[dict] | None = None  # a chat prompt's messages: a reward model renders them with its own template


def pending_tasks(session: Session, *, user_id: int, limit: int) -> list[PendingTask]:
    """Open pairwise/ranking tasks on train prompts this judge has not labelled, by priority then age."""
    done = select(Annotation.task_id).where(Annotation.user_id == user_id, Annotation.deleted_at.is_(None))
    rows = session.execute(
        select(Task.id, Task.kind, Prompt)
        .join(Prompt, Prompt.id == Task.prompt_id)
        .where(
            Task.completed.is_(False),
            Task.retired_at.is_(None),
            Task.gold.is_(False),  # gold tasks grade people; an AI label there is never used
            # flagged as possible reward hacking: for people (app.services.rounds.flagged), not a model that may
            # share the reward model's blind spot
            Task.flag_reason.is_(None),
            Task.kind.in_(("pairwise", "ranking")),
            Prompt.split == "train",
            Task.id.not_in(done),
        )
        .order_by(Task.priority.desc(), Task.id)
        .limit(limit)
    ).all()
    return _as_pending(session, rows)


def tasks_by_id(session: Session, task_ids: list[int]) -> list[PendingTask]:
    """These tasks as the judge sees them, in id order (the calibration's sample)."""
    rows = session.execute(
        select(Task.id, Task.kind, Prompt)
        .join(Prompt, Prompt.id == Task.prompt_id)
        .where(Task.id.in_(task_ids))
        .order_by(Task.id)
    ).all()
    return _as_pending(session, rows)


def _as_pending(session: Session, rows) -> list[PendingTask]:
    out = []
    for task_id, kind, prompt in rows:
        positions = session.scalars(
            select(TaskPosition).where(TaskPosition.task_id == task_id).order_by(TaskPosition.position)
        ).all()
        out.append(
            PendingTask(
                task_id,
                kind,
                prompt_display_text(prompt),
                [p.generation_id for p in positions],
                [p.generation.text for p in positions],
                prompt.messages,
            )
        )
    return out


# ---- judges (run in the job's process) ---------------------------------------------------------------------------

Scorer = Callable[[list[PendingTask]], list[list[float]]]


def reward_model_scorer(path: str) -> Scorer:
    """Each response's reward (the trainer's rm: judge: prompt + response + EOS, score at the last token)."""
    from trainer.judges import load_judge
    from trainer.runtime import resolve_device

    judge = load_judge(f"rm:{path}", resolve_device("auto"), "auto")

    def score(tasks: list[PendingTask]) -> list[list[float]]:
        flat = judge(
            [t.prompt for t in tasks for _ in t.texts],
            [r for t in tasks for r in t.texts],
            [t.messages for t in tasks for _ in t.texts],
        )
        out, i = [], 0
        for t in tasks:
            out.append(flat[i : i + len(t.texts)])
            i += len(t.texts)
        return out

    return score


def choice_prompt(prompt: str, responses: list[str]) -> str:
    parts = [prompt.rstrip(), ""]
    for letter, text in zip(LETTERS, responses):
        parts.append(f"Response {letter}:{text if text.startswith(' ') else ' ' + text}")
    parts.append(f"\nWhich response is better, {', '.join(LETTERS[: len(responses)])}? Answer:")
    return "\n".join(parts)


def lm_choice_scorer(path: str) -> Scorer:
    """Each response's log-probability of being named best, summed over the shown and the reversed order."""
    from trainer.runtime import load_causal_lm, load_tokenizer, resolve_device

    device = resolve_device("auto")
    tok = load_tokenizer(path)
    model = load_causal_lm(path, device, tokenizer=tok)
    # the first token of " A", " B", ... names the choice
    letter_ids = [tok(" " + letter, add_special_tokens=False)["input_ids"][0] for letter in LETTERS]
    return lambda tasks: _lm_choice_scores(model, tok, letter_ids, device, tasks)


def _lm_choice_scores(model, tok, letter_ids: list[int], device, tasks: list[PendingTask]) -> list[list[float]]:
    import torch

    from trainer.masks import pad_sequences, position_ids_from_mask

    config = model.config
    context = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 1 << 30
    queries = []  # (task index, order)
    for ti, t in enumerate(tasks):
        n = len(t.texts)
        for order in (list(range(n)), list(reversed(range(n)))):
            queries.append((ti, order))
    scores = [[0.0] * len(t.texts) for t in tasks]
    with torch.no_grad():
        for start in range(0, len(queries), BATCH):
            chunk = queries[start : start + BATCH]
            # the question at the end matters most: a query longer than the model's context loses its start
            seqs = [
                tok(choice_prompt(tasks[ti].prompt, [tasks[ti].texts[j] for j in order]))["input_ids"][-context:]
                for ti, order in chunk
            ]
            ids, mask = pad_sequences(seqs, pad_token_id=tok.pad_token_id, side="left")  # [B, T]
            ids, mask = ids.to(device), mask.to(device)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits[
                :, -1, :
            ]  # [B, V]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            for row, (ti, order) in enumerate(chunk):
                letters = torch.tensor(letter_ids[: len(order)], device=logprobs.device)
                choice = torch.log_softmax(logprobs[row, letters], dim=-1).tolist()  # over the offered letters
                for shown, response in enumerate(order):
                    scores[ti][response] += choice[shown]
    return scores


# ---- from scores to annotations -------------------------------------------------------------------------------------


def strength_for(judge: str, best: float, second: float) -> int:
    if judge == "reward_model":
        gap = best - second
        return 1 + sum(gap > g for g in RM_GAP_STRENGTH)
    # two summed log-probabilities: the chosen one's share of the two (a softmax over the pair)
    share = 1.0 / (1.0 + math.exp(min(50.0, (second - best) / 2)))
    return 1 + sum(share > p for p in LM_PROB_STRENGTH)


def judge_order(scores: list[float]) -> list[int]:
    """Response indices, best first: by score, then canonical position (no randomness in what the judge says)."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def annotation_for(
    task: PendingTask, scores: list[float], *, user_id: int, judge: JudgeModel, job_id: int
) -> Annotation:
    order = judge_order(scores)
    fields: dict[str, Any]
    if task.kind == "pairwise":
        best, second = order[0], order[1]
        fields = {
            "choice": "chosen",
            "chosen_id": task.generation_ids[best],
            "strength": strength_for(judge.judge, scores[best], scores[second]),
        }
    else:
        fields = {"ranking": [task.generation_ids[i] for i in order]}
    meta = {
        "judge": judge.judge,
        "model": judge.name,
        "path": judge.path,
        "label_ai_job": job_id,
        "scores": {str(g): round(s, 6) for g, s in zip(task.generation_ids, scores)},
    }
    digest = hashlib.sha256(json.dumps({"task": task.task_id, **fields}, sort_keys=True).encode()).hexdigest()
    return Annotation(
        task_id=task.task_id,
        user_id=user_id,
        source="ai",
        kind=task.kind,
        positions=list(task.generation_ids),
        idempotency_key=f"label-ai-{task.task_id}",
        request_hash=digest,
        meta=meta,
        **fields,
    )


def calibrate(
    ctx: JobContext, score: Callable[[], Scorer], *, cfg: LabelAIConfig, judge: JudgeModel, user_id: int
) -> dict[str, Any]:
    """Score a seeded sample of human-labelled tasks (no label stored) and record the judge's agreement per kind.
    `score` loads the judge only when there is something to score; no transaction is held while it scores."""
    with ctx.session() as session:
        labels = human_labelled_sample(session, size=cfg.calibration, seed=cfg.seed)
        sample = tasks_by_id(session, sorted(labels))
    orders: dict[int, list[int]] = {}
    for start in range(0, len(sample), 256):
        chunk = sample[start : start + 256]
        for task, scores in zip(chunk, score()(chunk)):
            orders[task.task_id] = [task.generation_ids[i] for i in judge_order(scores)]
    agreements = agreement_by_kind(labels, orders)
    with ctx.session() as session:
        name = f"{judge.judge} {judge.name}"
        store_calibration(session, annotator_id=user_id, judge=name, agreements=agreements, job_id=ctx.job_id)
    kinds = []
    for a in agreements:
        low, high = a.interval or (None, None)
        kinds.append({"kind": a.kind, "n": a.n, "agreed": a.agreed, "rate": a.rate, "low": low, "high": high})
    return {"tasks": len(sample), "seed": cfg.seed, "kinds": kinds}


@job_kind(LABEL_AI_KIND)
def run_label_ai(ctx: JobContext) -> dict[str, Any]:
    try:
        cfg = parse_label_ai_config(ctx.config)
        with ctx.session() as session:
            judge = resolve_judge(session, cfg)
            user = ai_annotator(session, username=cfg.annotator or default_annotator(judge))
            user_id, username = user.id, user.username
    except LabelAIError as exc:
        raise JobFailed(str(exc)) from None
    loaded: list[Scorer] = []

    def score() -> Scorer:  # the judge's model is loaded once, and only when there is something to score
        if not loaded:
            loaded.append((reward_model_scorer if judge.judge == "reward_model" else lm_choice_scorer)(judge.path))
        return loaded[0]

    out: dict[str, Any] = {"labelled": 0, "annotator": username, "judge": judge.judge, "model": judge.name}
    if cfg.calibration:
        ctx.progress(0, 1, f"calibrating {judge.name} on up to {cfg.calibration} human-labelled tasks")
        out["calibration"] = calibrate(ctx, score, cfg=cfg, judge=judge, user_id=user_id)
    with ctx.session() as session:
        tasks = pending_tasks(session, user_id=user_id, limit=cfg.limit)
    if not tasks:
        return out
    ctx.progress(0, len(tasks), f"scoring {len(tasks)} tasks with {judge.name}")
    for start in range(0, len(tasks), 256):  # stored chunk by chunk: a long run shows progress and keeps its work
        chunk = tasks[start : start + 256]
        all_scores = score()(chunk)
        with ctx.session() as session:
            for task, scores in zip(chunk, all_scores):
                session.add(annotation_for(task, scores, user_id=user_id, judge=judge, job_id=ctx.job_id))
                out["labelled"] += 1
        ctx.progress(start + len(chunk), len(tasks), f"{out['labelled']} tasks labelled")
    return out
