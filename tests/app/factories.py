"""Rows for tests, made directly through the models (tasks and annotations normally come from helper A's
services; tests of exports, stats and imports only need the rows). Every function flushes; tests commit."""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime

from app.models import Annotation, Generation, ModelVersion, Prompt, Task, TaskPosition, User
from app.security import new_public_id
from app.services.prompts import prompt_hash

_seq = itertools.count()


def make_annotator(db, username: str | None = None, *, role: str = "annotator", is_ai: bool = False) -> User:
    user = User(
        username=username or f"ann-{uuid.uuid4().hex[:8]}",
        role=role,
        password_hash=None,
        is_ai=is_ai,
        public_id=new_public_id(),
    )
    db.add(user)
    db.flush()
    return user


def make_prompt(db, text: str | None = None, *, messages=None, split: str = "train", tags=None) -> Prompt:
    if text is None and messages is None:
        text = f"prompt {next(_seq)} {uuid.uuid4().hex[:6]}"
    prompt = Prompt(
        text=text,
        messages=messages,
        content_hash=prompt_hash(text=text if messages is None else None, messages=messages),
        tags=tags or [],
        split=split,
        meta={},
    )
    db.add(prompt)
    db.flush()
    return prompt


def make_model(
    db,
    name: str = "policy-v1",
    *,
    kind: str = "policy",
    stage: str = "sft",
    path: str = "/nowhere",
    is_current: bool = False,
) -> ModelVersion:
    model = ModelVersion(name=name, kind=kind, stage=stage, path=path, is_current=is_current, metrics={})
    db.add(model)
    db.flush()
    return model


def make_generation(
    db,
    prompt: Prompt,
    text: str,
    *,
    model: ModelVersion | None = None,
    seed: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    max_new_tokens: int = 32,
) -> Generation:
    gen = Generation(
        prompt_id=prompt.id,
        model_version_id=model.id if model else None,
        text=text,
        seed=seed,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        source="model" if model else "imported",
    )
    db.add(gen)
    db.flush()
    return gen


def make_task(db, prompt: Prompt, gens: list[Generation], *, kind: str = "pairwise", overlap: int = 1) -> Task:
    task = Task(prompt_id=prompt.id, kind=kind, overlap=overlap, meta={})
    db.add(task)
    db.flush()
    for i, g in enumerate(gens):
        db.add(TaskPosition(task_id=task.id, position=i, generation_id=g.id))
    db.flush()
    return task


def _annotate(
    db,
    task: Task,
    user: User,
    *,
    kind: str,
    shown: list[int],
    source: str = "human",
    created_at: datetime | None = None,
    **fields,
) -> Annotation:
    ann = Annotation(
        task_id=task.id,
        user_id=user.id,
        source=source,
        kind=kind,
        positions=shown,
        idempotency_key=uuid.uuid4().hex,
        request_hash="0" * 64,
        meta=fields.pop("meta", {}),
        **fields,
    )
    if created_at is not None:
        ann.created_at = created_at
    db.add(ann)
    if source == "human":
        task.done_count += 1
        task.completed = task.done_count >= task.overlap
    db.flush()
    return ann


def annotate_pairwise(
    db,
    task: Task,
    user: User,
    *,
    chosen: Generation | None,
    choice: str = "chosen",
    strength: int | None = 2,
    shown: list[Generation] | None = None,
    **kw,
) -> Annotation:
    shown_ids = [g.generation_id for g in task.positions] if shown is None else [g.id for g in shown]
    return _annotate(
        db,
        task,
        user,
        kind="pairwise",
        shown=shown_ids,
        choice=choice,
        chosen_id=chosen.id if chosen else None,
        strength=strength if choice == "chosen" else None,
        **kw,
    )


def annotate_ranking(db, task: Task, user: User, *, ranking: list[Generation], **kw) -> Annotation:
    return _annotate(
        db,
        task,
        user,
        kind="ranking",
        shown=[p.generation_id for p in task.positions],
        ranking=[g.id for g in ranking],
        **kw,
    )


def annotate_rating(
    db, task: Task, user: User, *, ratings: dict[Generation, str], rewrite: str | None = None, **kw
) -> Annotation:
    return _annotate(
        db,
        task,
        user,
        kind="rating",
        shown=[p.generation_id for p in task.positions],
        ratings={str(g.id): v for g, v in ratings.items()},
        rewrite=rewrite,
        **kw,
    )


def pairwise_task(
    db,
    *,
    prompt_text: str | None = None,
    texts=("good answer", "bad"),
    model=None,
    overlap: int = 1,
    split: str = "train",
) -> tuple[Task, list[Generation]]:
    prompt = make_prompt(db, prompt_text, split=split)
    gens = [make_generation(db, prompt, t, model=model, seed=i) for i, t in enumerate(texts)]
    return make_task(db, prompt, gens, kind="pairwise" if len(gens) == 2 else "ranking", overlap=overlap), gens
