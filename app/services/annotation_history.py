"""An annotator's own history, as they saw it: each answer with its prompt and the labels shown (A, B, ...), and
one past answer opened read-only with its responses in the order shown and everything that was chosen."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Annotation, Generation, Prompt, Task
from app.services.errors import NotFound

LABELS = "ABCDEFGH"  # the responses of a task as an annotator sees them, in the order shown
STRENGTH_WORDS = {1: "slightly", 2: "clearly", 3: "much"}
EXCERPT = 80


class AnswerNotFound(NotFound):
    pass


def label_of(positions: list[Any], generation_id: Any) -> str:
    """The label the annotator saw on a response ("?" if it was not shown, which a stored answer never has)."""
    ids = [str(p) for p in positions or []]
    gid = str(generation_id)
    return LABELS[ids.index(gid)] if gid in ids and ids.index(gid) < len(LABELS) else "?"


def prompt_text(prompt: Prompt) -> str:
    if prompt.messages:
        return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in prompt.messages)
    return prompt.text or ""


def summary(annotation: Annotation) -> str:
    """What was chosen, in the labels shown: "B better (clearly)", "tie", "C > A > B", "A good, B bad"."""
    positions = annotation.positions or []
    parts = []
    if annotation.kind == "pairwise":
        if annotation.choice == "chosen":
            strength = STRENGTH_WORDS.get(annotation.strength or 0)
            parts.append(f"{label_of(positions, annotation.chosen_id)} better" + (f" ({strength})" if strength else ""))
        elif annotation.choice:
            parts.append(annotation.choice.replace("_", " "))
    elif annotation.kind == "ranking" and annotation.ranking:
        parts.append(" > ".join(label_of(positions, gid) for gid in annotation.ranking))
    if annotation.ratings:
        rated = sorted((label_of(positions, gid), verdict) for gid, verdict in annotation.ratings.items())
        parts.append(", ".join(f"{label} {verdict}" for label, verdict in rated))
    return "; ".join(parts) or "no choice"


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    task_id: int
    kind: str
    summary: str
    prompt_excerpt: str
    created_at: datetime
    deleted_at: datetime | None


def my_history(session: Session, *, user_id: int, limit: int = 50) -> list[HistoryEntry]:
    """The annotator's latest human annotations (undone ones too, marked), newest first, with their prompts."""
    rows = session.execute(
        select(Annotation, Prompt)
        .join(Task, Task.id == Annotation.task_id)
        .join(Prompt, Prompt.id == Task.prompt_id)
        .where(Annotation.user_id == user_id, Annotation.source == "human")
        .order_by(Annotation.id.desc())
        .limit(limit)
    ).all()
    entries = []
    for annotation, prompt in rows:
        text = " ".join(prompt_text(prompt).split())
        excerpt = text if len(text) <= EXCERPT else text[: EXCERPT - 1] + "…"
        entries.append(
            HistoryEntry(
                id=annotation.id,
                task_id=annotation.task_id,
                kind=annotation.kind,
                summary=summary(annotation),
                prompt_excerpt=excerpt,
                created_at=annotation.created_at,
                deleted_at=annotation.deleted_at,
            )
        )
    return entries


@dataclass(frozen=True)
class ShownResponse:
    label: str
    text: str
    rating: str | None
    critique: str | None
    chosen: bool
    rank: int | None

    @property
    def marks(self) -> str:
        """What was said of this response: "chosen", "rank 2", "good", joined."""
        said = ["chosen"] if self.chosen else []
        said += [f"rank {self.rank}"] if self.rank else []
        said += [self.rating] if self.rating else []
        return " · ".join(said)


@dataclass(frozen=True)
class AnswerReview:
    id: int
    task_id: int
    kind: str
    summary: str
    prompt_text: str | None
    prompt_messages: list[dict[str, Any]] | None
    responses: list[ShownResponse]
    choice: str | None
    strength: str | None
    critique: str | None
    rewrite: str | None
    flags: list[str] = field(default_factory=list)
    created_at: datetime | None = None
    deleted_at: datetime | None = None


def my_answer(session: Session, *, user_id: int, annotation_id: int) -> AnswerReview:
    """One of the annotator's own answers, read-only; another person's (or an AI's) is not found."""
    row = session.execute(
        select(Annotation, Prompt)
        .join(Task, Task.id == Annotation.task_id)
        .join(Prompt, Prompt.id == Task.prompt_id)
        .where(Annotation.id == annotation_id, Annotation.user_id == user_id, Annotation.source == "human")
    ).first()
    if row is None:
        raise AnswerNotFound(f"you have no annotation {annotation_id}")
    annotation, prompt = row
    positions = [int(p) for p in annotation.positions or []]
    texts = dict(session.execute(select(Generation.id, Generation.text).where(Generation.id.in_(positions))).all())
    ranking = [int(g) for g in annotation.ranking or []]
    ratings = {str(k): v for k, v in (annotation.ratings or {}).items()}
    critiques = {str(k): v for k, v in (annotation.critiques or {}).items()}
    responses = [
        ShownResponse(
            label=LABELS[i] if i < len(LABELS) else "?",
            text=texts.get(gid, ""),
            rating=ratings.get(str(gid)),
            critique=critiques.get(str(gid)),
            chosen=annotation.choice == "chosen" and annotation.chosen_id == gid,
            rank=ranking.index(gid) + 1 if gid in ranking else None,
        )
        for i, gid in enumerate(positions)
    ]
    return AnswerReview(
        id=annotation.id,
        task_id=annotation.task_id,
        kind=annotation.kind,
        summary=summary(annotation),
        prompt_text=prompt.text,
        prompt_messages=prompt.messages,
        responses=responses,
        choice=annotation.choice,
        strength=STRENGTH_WORDS.get(annotation.strength or 0) if annotation.choice == "chosen" else None,
        critique=annotation.critique,
        rewrite=annotation.rewrite,
        flags=list(annotation.flags or []),
        created_at=annotation.created_at,
        deleted_at=annotation.deleted_at,
    )
