"""How far an AI judge's labels can be trusted: its agreement with people, per task kind, and the gate a round
passes before it trains on AI labels.

A calibration (run by the `label-ai` job before it labels anything) scores a seeded sample of tasks people have
labelled with the same judge, stores none of those labels, and compares the judge's order with each human label:
  pairwise  one comparison per human choice of a response (ties and "both bad" say no order): agreed when the
            judge puts the same response first;
  ranking   one comparison per pair within the human ranking: agreed when the judge orders the pair the same way
            (the share of concordant pairs, (1 + Kendall's tau) / 2 on rankings without ties).
Each kind's rate comes with its Wilson 95% interval. The pairs of one ranking are not independent, so its interval
is narrower than it should be; the rate itself is unbiased. The judge labels only pairwise and ranking tasks (it
gives no good/bad verdict), so those are the kinds calibrated.

A round whose data holds AI labels (source `all` or `ai`) refuses to start while any of their judges' latest
calibration, for a kind it labelled, is absent, unknown (no human labels to compare) or below `ai_min_agreement`,
unless the round allows untrusted AI labels (`allow_untrusted_ai_labels`, kept in its config).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import AICalibration, Annotation, Task, User, utcnow
from app.services.gold import wilson_interval
from app.services.training_labels import training_labels
from domain.vocabulary import ROUND_TASK_KINDS

# The kinds the judge labels, so the kinds it is calibrated on.
CALIBRATED_KINDS = ROUND_TASK_KINDS
# Human-labelled tasks a calibration scores unless told: about +-0.13 at 95% on pairwise tasks alone, enough to
# tell a judge near chance from a useful one in a minute of scoring.
DEFAULT_CALIBRATION_TASKS = 50


@dataclass(frozen=True)
class HumanLabel:
    """One person's order on a task, in generation ids: a pairwise choice or a ranking, best first."""

    task_id: int
    kind: str
    order: tuple[int, ...]  # pairwise: (chosen,) ; ranking: every id, best first


@dataclass(frozen=True)
class KindAgreement:
    kind: str
    n: int
    agreed: int

    @property
    def rate(self) -> float | None:
        return self.agreed / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.agreed, self.n) if self.n else None


def human_labelled_sample(session: Session, *, size: int, seed: int) -> dict[int, list[HumanLabel]]:
    """Up to `size` tasks people have labelled with an order (a choice of a response, or a ranking), drawn at random
    with `seed`, and each task's human labels. Tasks and annotators whose labels are excluded are left out."""
    decided = (
        select(Annotation.task_id)
        .join(Task, Task.id == Annotation.task_id)
        .where(
            Annotation.source == "human",
            Annotation.deleted_at.is_(None),
            Annotation.kind.in_(CALIBRATED_KINDS),
            Task.retired_at.is_(None),
            Annotation.user_id.not_in(select(User.id).where(User.labels_excluded.is_(True))),
            # a ranking's JSON is checked below (a JSON null is not SQL NULL on every backend)
            ((Annotation.kind == "pairwise") & (Annotation.choice == "chosen") & Annotation.chosen_id.is_not(None))
            | (Annotation.kind == "ranking"),
        )
    )
    task_ids = sorted(set(session.scalars(decided.distinct())))
    if not task_ids or size <= 0:
        return {}
    chosen = sorted(random.Random(seed).sample(task_ids, min(size, len(task_ids))))
    labels: dict[int, list[HumanLabel]] = {}
    rows = session.execute(
        decided.add_columns(Annotation.kind, Annotation.chosen_id, Annotation.ranking)
        .where(Annotation.task_id.in_(chosen))
        .order_by(Annotation.task_id, Annotation.id)
    )
    for task_id, kind, chosen_id, ranking in rows:
        order = (chosen_id,) if kind == "pairwise" else tuple(ranking or ())
        if kind == "pairwise" or len(order) >= 2:
            labels.setdefault(task_id, []).append(HumanLabel(task_id, kind, order))
    return labels


def label_agreement(label: HumanLabel, judge_order: list[int]) -> tuple[int, int]:
    """(agreed, compared) of one human label with the judge's order of the task's responses (ids, best first)."""
    if label.kind == "pairwise":
        return int(bool(judge_order) and judge_order[0] == label.order[0]), 1
    place = {g: i for i, g in enumerate(judge_order)}
    ranked = [g for g in label.order if g in place]
    agreed = compared = 0
    for i, better in enumerate(ranked):
        for worse in ranked[i + 1 :]:
            compared += 1
            agreed += place[better] < place[worse]
    return agreed, compared


def agreement_by_kind(labels: dict[int, list[HumanLabel]], judge_orders: dict[int, list[int]]) -> list[KindAgreement]:
    """Agreement per calibrated kind (every kind listed, n 0 where there was nothing to compare)."""
    counts = {kind: [0, 0] for kind in CALIBRATED_KINDS}
    for task_id, task_labels in labels.items():
        order = judge_orders.get(task_id)
        if order is None:
            continue
        for label in task_labels:
            agreed, compared = label_agreement(label, order)
            counts[label.kind][0] += agreed
            counts[label.kind][1] += compared
    return [KindAgreement(kind, n, agreed) for kind, (agreed, n) in counts.items()]


def store_calibration(
    session: Session, *, annotator_id: int, judge: str, agreements: list[KindAgreement], job_id: int | None = None
) -> list[AICalibration]:
    """One row per kind, all with the same created_at (that is what makes them one calibration). Flushes."""
    now = utcnow()
    rows = []
    for a in agreements:
        low, high = a.interval or (None, None)
        rows.append(
            AICalibration(
                annotator_id=annotator_id,
                judge=judge,
                job_id=job_id,
                kind=a.kind,
                n=a.n,
                agreed=a.agreed,
                rate=a.rate,
                low=low,
                high=high,
                created_at=now,
            )
        )
    session.add_all(rows)
    session.flush()
    return rows


def latest_calibration(session: Session, annotator_id: int, *, as_of: datetime | None = None) -> list[AICalibration]:
    """The rows of the judge's latest calibration (made at or before `as_of`), in kind order; [] for none."""
    newest = select(func.max(AICalibration.created_at)).where(AICalibration.annotator_id == annotator_id)
    if as_of is not None:
        newest = newest.where(AICalibration.created_at <= as_of)
    at = session.scalar(newest)
    if at is None:
        return []
    rows = session.scalars(
        select(AICalibration).where(AICalibration.annotator_id == annotator_id, AICalibration.created_at == at)
    ).all()
    order = {k: i for i, k in enumerate(CALIBRATED_KINDS)}
    return sorted(rows, key=lambda r: order.get(r.kind, len(order)))


def format_rate(row: AICalibration | KindAgreement) -> str:
    """ "82% [70%, 90%] (41/50)", or why the agreement is unknown."""
    rate = row.rate
    if rate is None:
        return f"agreement unknown: no human-labelled {row.kind} tasks to compare"
    low, high = (row.low, row.high) if isinstance(row, AICalibration) else row.interval
    return f"{rate:.0%} [{low:.0%}, {high:.0%}] ({row.agreed}/{row.n})"


def calibration_to_dict(row: AICalibration, threshold: float) -> dict[str, Any]:
    return {
        "kind": row.kind,
        "n": row.n,
        "agreed": row.agreed,
        "rate": row.rate,
        "low": row.low,
        "high": row.high,
        "trusted": row.rate is not None and row.rate >= threshold,
    }


# ---- the round's gate -------------------------------------------------------------------------------------------


@dataclass
class JudgeTrust:
    """One AI judge whose labels a round would train on: the kinds it labelled there and its latest calibration."""

    annotator_id: int
    annotator: str
    kinds: list[str]
    calibration: list[AICalibration]
    threshold: float
    problems: list[str] = field(default_factory=list)

    @property
    def trusted(self) -> bool:
        return not self.problems

    @property
    def calibrated_at(self) -> datetime | None:
        return self.calibration[0].created_at if self.calibration else None


def judge_trust(
    session: Session, annotator_id: int, username: str, kinds: list[str], *, threshold: float, as_of=None
) -> JudgeTrust:
    rows = latest_calibration(session, annotator_id, as_of=as_of)
    trust = JudgeTrust(annotator_id, username, kinds, rows, threshold)
    by_kind = {r.kind: r for r in rows}
    if not rows:
        trust.problems.append(f"{username}: never calibrated (run label-ai with --calibration above 0)")
        return trust
    for kind in kinds:
        row = by_kind.get(kind)
        if row is None or row.rate is None:
            trust.problems.append(f"{username} {kind}: agreement unknown (no human-labelled {kind} tasks to compare)")
        elif row.rate < threshold:
            trust.problems.append(f"{username} {kind}: agreement {format_rate(row)} below {threshold:.0%}")
    return trust


def ai_label_trust(
    session: Session,
    *,
    source: str,
    since: datetime | None,
    threshold: float,
    until_id: int | None = None,
    as_of: datetime | None = None,
) -> list[JudgeTrust]:
    """Every AI judge whose labels the round's filters admit, with its latest calibration (as of `as_of`) checked
    against `threshold` for the kinds it labelled there. [] when the round takes human labels only, or none are AI."""
    if source == "human":
        return []
    used = session.execute(
        training_labels(Annotation.user_id, Annotation.kind, source="ai", since=since, until_id=until_id)
        .where(Annotation.kind.in_(CALIBRATED_KINDS))
        .distinct()
    ).all()
    kinds: dict[int, list[str]] = {}
    for user_id, kind in used:
        kinds.setdefault(user_id, []).append(kind)
    if not kinds:
        return []
    names = dict(session.execute(select(User.id, User.username).where(User.id.in_(kinds))).all())
    order = {k: i for i, k in enumerate(CALIBRATED_KINDS)}
    return [
        judge_trust(session, uid, names[uid], sorted(ks, key=order.__getitem__), threshold=threshold, as_of=as_of)
        for uid, ks in sorted(kinds.items())
    ]


def untrusted_message(trust: list[JudgeTrust], threshold: float) -> str | None:
    """Why the round refuses its AI labels, with each figure and the threshold; None when every judge is trusted."""
    problems = [p for t in trust for p in t.problems]
    if not problems:
        return None
    return (
        f"AI labels not trusted (least agreement with human labels {threshold:.0%}, RLHF_AI_MIN_AGREEMENT): "
        + "; ".join(problems)
        + ". Calibrate the judge (rlhf label-ai), train on human labels only (source human), or allow them "
        "explicitly (allow_untrusted_ai_labels, --allow-untrusted-ai)"
    )


def trust_to_dict(trust: JudgeTrust) -> dict[str, Any]:
    return {
        "annotator_id": trust.annotator_id,
        "annotator": trust.annotator,
        "kinds": trust.kinds,
        "calibrated_at": trust.calibrated_at.isoformat() if trust.calibrated_at else None,
        "calibration": [calibration_to_dict(r, trust.threshold) for r in trust.calibration],
        "threshold": trust.threshold,
        "trusted": trust.trusted,
        "problems": trust.problems,
    }


# ---- the latest calibration of every judge (page and API) --------------------------------------------------------


def latest_calibrations(session: Session, *, threshold: float, annotator: str | None = None) -> list[dict[str, Any]]:
    """Each AI judge's latest calibration, newest first (one judge by username with `annotator`)."""
    stmt = select(User).where(User.is_ai.is_(True), User.id.in_(select(AICalibration.annotator_id)))
    if annotator:
        stmt = stmt.where(User.username == annotator)
    out = []
    for user in session.scalars(stmt):
        rows = latest_calibration(session, user.id)
        out.append(
            {
                "annotator_id": user.id,
                "annotator": user.username,
                "judge": rows[0].judge,
                "job_id": rows[0].job_id,
                "created_at": rows[0].created_at.isoformat(),
                "threshold": threshold,
                "kinds": [{**calibration_to_dict(r, threshold), "text": format_rate(r)} for r in rows],
            }
        )
    return sorted(out, key=lambda c: c["created_at"], reverse=True)
