"""The leaderboard: every policy version ranked by a Bradley–Terry fit (app.services.bradley_terry) over every human
comparison between responses of two different policies, the way Chatbot Arena ranks models.

A comparison is a live human judgement (annotators whose labels are excluded left out, gold and retired tasks
left out) of a task holding responses of two or more policies: a pairwise choice (a tie or both-bad counts half
to each), or each pair of a ranking's order. In practice these are the rounds' verdict tasks (app.services.verdict);
a generation's own tasks hold one policy's responses and compare nothing. The strengths are anchored so the first
SFT policy is 0 (else the oldest compared policy), and shown in Elo points (400 = 10:1 odds) with bootstrap 95%
intervals."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Annotation, Generation, ModelVersion, Task, TaskPosition, User
from app.services.bradley_terry import BOOTSTRAP_ROUNDS, ELO_PER_LOGIT, Comparison, fit_strengths


@dataclass(frozen=True)
class LeaderboardRow:
    rank: int | None  # None: not compared yet
    model_id: int
    name: str
    stage: str
    round_id: int | None
    is_current: bool
    elo: float | None  # Elo points, the anchor at 0
    low: float | None  # bootstrap 95% interval, Elo points
    high: float | None
    comparisons: int
    wins: float  # ties count half
    anchor: bool


@dataclass(frozen=True)
class Leaderboard:
    rows: list[LeaderboardRow]
    comparisons: int
    anchor_id: int | None
    bootstrap_rounds: int


def policy_comparisons(session: Session) -> list[Comparison]:
    """Every human comparison between responses of two different policies (players: model version ids)."""
    mixed = (
        select(TaskPosition.task_id)
        .join(Generation, Generation.id == TaskPosition.generation_id)
        .where(Generation.model_version_id.is_not(None))
        .group_by(TaskPosition.task_id)
        .having(func.count(func.distinct(Generation.model_version_id)) > 1)
    )
    owner = dict(
        session.execute(
            select(Generation.id, Generation.model_version_id)
            .join(TaskPosition, TaskPosition.generation_id == Generation.id)
            .where(TaskPosition.task_id.in_(mixed))
        ).all()
    )
    rows = session.execute(
        select(Annotation.kind, Annotation.choice, Annotation.chosen_id, Annotation.positions, Annotation.ranking)
        .join(Task, Task.id == Annotation.task_id)
        .join(User, User.id == Annotation.user_id)
        .where(
            Annotation.task_id.in_(mixed),
            Annotation.source == "human",
            Annotation.deleted_at.is_(None),
            Annotation.kind.in_(("pairwise", "ranking")),
            Task.gold.is_(False),
            Task.retired_at.is_(None),
            User.labels_excluded.is_(False),
        )
        .order_by(Annotation.id)
    ).all()
    out: list[Comparison] = []
    for kind, choice, chosen_id, positions, ranking in rows:
        if kind == "pairwise":
            a, b = (owner.get(g) for g in positions[:2])
            if a is None or b is None or a == b:
                continue
            if choice == "chosen":
                out.append(Comparison(a, b, 1.0 if owner.get(chosen_id) == a else 0.0))
            else:  # tie, both bad: neither preferred
                out.append(Comparison(a, b, 0.5))
        else:
            order = [owner.get(g) for g in ranking or []]
            for i, better in enumerate(order):
                for worse in order[i + 1 :]:
                    if better is not None and worse is not None and better != worse:
                        out.append(Comparison(better, worse, 1.0))
    return out


def leaderboard(session: Session, *, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0) -> Leaderboard:
    """Every policy version (imported responses' entry aside), compared ones ranked by strength, then the rest."""
    policies = list(
        session.scalars(
            select(ModelVersion)
            .where(ModelVersion.kind == "policy", ModelVersion.stage != "imported")
            .order_by(ModelVersion.id)
        )
    )
    comparisons = policy_comparisons(session)
    counts: dict[int, int] = {}
    wins: dict[int, float] = {}
    for c in comparisons:
        counts[c.a] = counts.get(c.a, 0) + 1
        counts[c.b] = counts.get(c.b, 0) + 1
        wins[c.a] = wins.get(c.a, 0.0) + c.score
        wins[c.b] = wins.get(c.b, 0.0) + 1.0 - c.score
    first_sft = next((m.id for m in policies if m.stage == "sft"), None)
    players = sorted(counts)
    anchor = first_sft if first_sft is not None else (players[0] if players else None)
    strengths = {}
    if players:
        if anchor not in counts:
            players = sorted([anchor, *players])
        strengths = {s.player: s for s in fit_strengths(players, comparisons, anchor=anchor, rounds=rounds, seed=seed)}
    ranked = sorted(
        policies, key=lambda m: (m.id not in counts, -(strengths[m.id].theta if m.id in counts else 0.0), m.id)
    )
    rows = []
    for i, m in enumerate(ranked):
        s = strengths.get(m.id) if m.id in counts else None
        rows.append(
            LeaderboardRow(
                rank=i + 1 if s is not None else None,
                model_id=m.id,
                name=m.name,
                stage=m.stage,
                round_id=m.round_job_id,
                is_current=m.is_current,
                elo=s.elo if s else None,
                low=s.low * ELO_PER_LOGIT if s else None,
                high=s.high * ELO_PER_LOGIT if s else None,
                comparisons=counts.get(m.id, 0),
                wins=wins.get(m.id, 0.0),
                anchor=m.id == anchor,
            )
        )
    return Leaderboard(rows=rows, comparisons=len(comparisons), anchor_id=anchor, bootstrap_rounds=rounds)
