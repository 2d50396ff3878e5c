"""Gold tasks and qualification: tasks with a known answer, how an annotation is graded against it, each
annotator's gold accuracy (with a Wilson interval), and the qualification set new annotators must pass.

A gold task is a task (tasks.gold) with a `gold_answers` row: the answer in generation ids and an optional
explanation. Marked `qualification`, it belongs to the qualification set, shown first to an annotator who has
not qualified and graded when they finish it; otherwise the assignment service mixes it into queues at the gold
rate. Either way the annotator sees an ordinary task: the answer lives in its own table, which nothing that
shows a task reads. Annotations of gold tasks measure annotators; they are never preference data (exports,
snapshots and agreement leave them out).

Graded as right: pairwise, the same choice (and the same response when one is chosen; strength does not count);
ranking, the same full order; rating, every response rated as the answer rates it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.orm import Session

from app.inputs import DB_INT_MAX, storable_problem
from app.models import (
    Annotation,
    Assignment,
    Generation,
    GoldAnswer,
    Prompt,
    QualificationResult,
    Task,
    TaskPosition,
    User,
    utcnow,
)
from app.services.annotation_history import LABELS, label_of, prompt_text, summary
from app.services.errors import NotFound, ServiceError

Db = Session | Connection
CHOICES = ("chosen", "tie", "both_bad")
MAX_EXPLANATION_CHARS = 4000
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


class GoldInvalid(ServiceError):
    """A gold answer that does not fit its task (HTTP 422); nothing is stored."""


class QualificationFailed(ServiceError):
    """The annotator failed the qualification set: no real tasks until an admin resets or allows them."""

    status = 403


# ---- answers ---------------------------------------------------------------------------------------------------


def normalize_answer(kind: str, response_ids: list[int], raw: Any) -> dict[str, Any]:
    """A gold answer in generation ids, checked against the task: {"choice", "chosen_id"} (pairwise; chosen_id only
    with choice=chosen), {"ranking": every id, best first} or {"ratings": {"<id>": "good"|"bad"} for every id}."""
    if not isinstance(raw, dict):
        raise GoldInvalid("the gold answer must be an object")
    ids = set(response_ids)
    allowed = {"pairwise": {"choice", "chosen_id"}, "ranking": {"ranking"}, "rating": {"ratings"}}[kind]
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise GoldInvalid(f"a {kind} gold answer takes {', '.join(sorted(allowed))}, not {', '.join(unknown)}")

    def gen_id(value: Any, name: str) -> int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
            raise GoldInvalid(f"{name} must be a response id")
        if int(value) not in ids:
            raise GoldInvalid(f"{name} {value!r} is not one of the task's responses {sorted(ids)}")
        return int(value)

    if kind == "pairwise":
        choice = raw.get("choice")
        if choice not in CHOICES:
            raise GoldInvalid("the gold choice must be chosen, tie or both_bad")
        if choice == "chosen":
            return {"choice": choice, "chosen_id": gen_id(raw.get("chosen_id"), "chosen_id")}
        if raw.get("chosen_id") is not None:
            raise GoldInvalid(f"chosen_id only goes with choice=chosen, not {choice}")
        return {"choice": choice, "chosen_id": None}
    if kind == "ranking":
        ranking = raw.get("ranking")
        if not isinstance(ranking, list) or len(ranking) != len(ids):
            raise GoldInvalid(f"the gold ranking must list all {len(ids)} responses, best first")
        ranked = [gen_id(r, "ranking entry") for r in ranking]
        if set(ranked) != ids:
            raise GoldInvalid("the gold ranking must name each response once")
        return {"ranking": ranked}
    ratings = raw.get("ratings")
    if not isinstance(ratings, dict):
        raise GoldInvalid('the gold ratings must be an object {"<response id>": "good"|"bad"}')
    out = {}
    for key, value in ratings.items():
        if value not in ("good", "bad"):
            raise GoldInvalid(f"a gold rating must be good or bad, not {value!r}")
        out[str(gen_id(key, "ratings key"))] = value
    if len(out) != len(ids):
        raise GoldInvalid(f"the gold ratings must rate every response: missing {sorted(ids - {int(k) for k in out})}")
    return {"ratings": out}


def is_correct(kind: str, answer: dict[str, Any], *, choice=None, chosen_id=None, ranking=None, ratings=None) -> bool:
    """Whether an annotation's feedback matches the gold answer (module docstring: what counts)."""
    if kind == "pairwise":
        return choice == answer.get("choice") and (choice != "chosen" or chosen_id == answer.get("chosen_id"))
    if kind == "ranking":
        return [int(g) for g in ranking or []] == answer.get("ranking")
    given = {str(k): v for k, v in (ratings or {}).items()}
    return given == answer.get("ratings")


def clean_explanation(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise GoldInvalid("the explanation must be text")
    value = value.strip()
    problem = storable_problem(value)
    if problem:
        raise GoldInvalid(f"the explanation {problem}")
    if len(value) > MAX_EXPLANATION_CHARS:
        raise GoldInvalid(f"the explanation is longer than {MAX_EXPLANATION_CHARS} characters")
    return value or None


@dataclass
class GoldSpec:
    """A gold answer given with an imported task, in response indices (0-based, the order of `responses`)."""

    answer: dict[str, Any]  # normalized with the indices standing in for generation ids
    explanation: str | None
    qualification: bool


def parse_gold_field(raw: Any, *, kind: str, responses: int) -> GoldSpec:
    """The `gold` field of an import line or of `POST /api/v1/tasks`: {"answer": {...}, "explanation": str,
    "qualification": bool}, the answer in response indices: {"choice": "chosen", "chosen": 0} (or "tie",
    "both_bad"), {"ranking": [2, 0, 1]}, {"ratings": ["good", "bad"]}. Raises ValueError with the reason."""
    if not isinstance(raw, dict):
        raise ValueError('gold must be an object {"answer", "explanation", "qualification"}')
    unknown = sorted(set(raw) - {"answer", "explanation", "qualification"})
    if unknown:
        raise ValueError(f"unknown gold field(s) {', '.join(unknown)} (allowed: answer, explanation, qualification)")
    answer = raw.get("answer")
    if not isinstance(answer, dict):
        raise ValueError("gold.answer must be an object")
    qualification = raw.get("qualification", False)
    if not isinstance(qualification, bool):
        raise ValueError("gold.qualification must be true or false")
    by_id: dict[str, Any] = {}
    try:
        if kind == "pairwise":
            extra = sorted(set(answer) - {"choice", "chosen"})
            if extra:
                raise GoldInvalid(f"a pairwise gold answer takes choice and chosen, not {', '.join(extra)}")
            by_id = {"choice": answer.get("choice"), "chosen_id": answer.get("chosen")}
        elif kind == "ranking":
            by_id = dict(answer)
        else:
            ratings = answer.get("ratings")
            if not isinstance(ratings, list) or len(ratings) != responses:
                raise GoldInvalid(f"gold ratings must be a list of {responses} good/bad values, one per response")
            by_id = {**answer, "ratings": {str(i): v for i, v in enumerate(ratings)}}
        normalized = normalize_answer(kind, list(range(responses)), by_id)
        explanation = clean_explanation(raw.get("explanation"))
    except GoldInvalid as exc:
        message = (
            str(exc)
            .replace("response id", "response index")
            .replace("the task's responses", "the response indices")
            .replace("chosen_id", "chosen")
        )
        raise ValueError(f"gold: {message}") from None
    return GoldSpec(answer=normalized, explanation=explanation, qualification=qualification)


def answer_in_ids(answer: dict[str, Any], generation_ids: list[int]) -> dict[str, Any]:
    """An index answer (GoldSpec.answer) in the generation ids the import gave the responses."""
    if "ranking" in answer:
        return {"ranking": [generation_ids[i] for i in answer["ranking"]]}
    if "ratings" in answer:
        return {"ratings": {str(generation_ids[int(i)]): v for i, v in answer["ratings"].items()}}
    chosen = answer.get("chosen_id")
    return {"choice": answer["choice"], "chosen_id": None if chosen is None else generation_ids[chosen]}


# ---- marking tasks gold ----------------------------------------------------------------------------------------


def _response_ids(session: Session, task_id: int) -> list[int]:
    return list(
        session.scalars(
            select(TaskPosition.generation_id).where(TaskPosition.task_id == task_id).order_by(TaskPosition.position)
        )
    )


def mark_gold(
    session: Session, *, task_id: int, answer: Any, explanation: Any = None, qualification: bool = False
) -> GoldTaskRow:
    """Make an existing task gold with its answer (or replace the answer of a gold task). From now on it leaves the
    regular queue, and its annotations (those made before included) leave exports and agreement. Flushes."""
    task = session.get(Task, task_id)
    if task is None:
        raise NotFound(f"task {task_id} does not exist")
    normalized = normalize_answer(task.kind, _response_ids(session, task_id), answer)
    text = clean_explanation(explanation)
    gold = session.get(GoldAnswer, task_id)
    if gold is None:
        gold = GoldAnswer(task_id=task_id, answer=normalized, explanation=text, qualification=qualification)
        session.add(gold)
    else:
        gold.answer, gold.explanation, gold.qualification = normalized, text, qualification
    task.gold = True
    session.flush()
    return list_gold(session, task_id=task_id)[0]


def unmark_gold(session: Session, *, task_id: int) -> None:
    """A gold task becomes a regular one again (its annotations count as preference data again). Flushes."""
    task = session.get(Task, task_id)
    gold = session.get(GoldAnswer, task_id)
    if task is None or gold is None:
        raise NotFound(f"task {task_id} is not a gold task")
    session.delete(gold)
    task.gold = False
    session.flush()


@dataclass
class GoldTaskRow:
    task_id: int
    kind: str
    prompt: str
    answer: dict[str, Any]
    explanation: str | None
    qualification: bool
    annotations: int
    correct: int
    retired: bool


def list_gold(session: Session, *, limit: int = 200, offset: int = 0, task_id: int | None = None) -> list[GoldTaskRow]:
    """Gold tasks (or the one `task_id`), newest first, with how many live human annotations each has and how many
    were right."""
    stmt = (
        select(Task.id, Task.kind, Task.retired_at, Prompt.text, Prompt.messages, GoldAnswer)
        .join(GoldAnswer, GoldAnswer.task_id == Task.id)
        .join(Prompt, Prompt.id == Task.prompt_id)
    )
    if task_id is not None:
        stmt = stmt.where(Task.id == task_id)
    rows = session.execute(stmt.order_by(Task.id.desc()).limit(limit).offset(offset)).all()
    graded: dict[int, list[bool]] = {}
    for task_id, _user, right in _graded(session, task_ids=[r[0] for r in rows]):
        graded.setdefault(task_id, []).append(right)
    out = []
    for task_id, kind, retired_at, text, messages, gold in rows:
        prompt = text if messages is None else " / ".join(m["content"] for m in messages if m.get("role") == "user")
        marks = graded.get(task_id, [])
        out.append(
            GoldTaskRow(
                task_id=task_id,
                kind=kind,
                prompt=prompt or "",
                answer=gold.answer,
                explanation=gold.explanation,
                qualification=gold.qualification,
                annotations=len(marks),
                correct=sum(marks),
                retired=retired_at is not None,
            )
        )
    return out


# ---- accuracy --------------------------------------------------------------------------------------------------


def wilson_interval(correct: int, count: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default): sound at small counts and near 0 or 1."""
    if count <= 0:
        return 0.0, 1.0
    p = correct / count
    denominator = 1 + z * z / count
    centre = (p + z * z / (2 * count)) / denominator
    half = z * math.sqrt(p * (1 - p) / count + z * z / (4 * count * count)) / denominator
    # Exact ends where the share is 0 or 1 (rounding would leave 1e-17 off).
    return (0.0 if correct == 0 else max(0.0, centre - half)), (1.0 if correct == count else min(1.0, centre + half))


@dataclass(frozen=True)
class GoldAccuracy:
    """One annotator's answers to mixed-in gold tasks: how many, how many right, the share, its 95% interval."""

    count: int
    correct: int
    accuracy: float
    low: float
    high: float

    @property
    def interval(self) -> tuple[float, float]:
        return self.low, self.high

    def as_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "low": self.low,
            "high": self.high,
        }


def accuracy_of(correct: int, count: int) -> GoldAccuracy:
    low, high = wilson_interval(correct, count)
    return GoldAccuracy(count=count, correct=correct, accuracy=correct / count, low=low, high=high)


def _graded(
    db: Db, *, qualification: bool | None = None, user_id: int | None = None, task_ids: list[int] | None = None
):
    """(task id, user id, right?) for each live human annotation of a gold task, in id order."""
    stmt = (
        select(
            Annotation.task_id,
            Annotation.user_id,
            Annotation.kind,
            Annotation.choice,
            Annotation.chosen_id,
            Annotation.ranking,
            Annotation.ratings,
            GoldAnswer.answer,
        )
        .join(GoldAnswer, GoldAnswer.task_id == Annotation.task_id)
        .join(Task, Task.id == Annotation.task_id)
        .where(Annotation.deleted_at.is_(None), Annotation.source == "human", Task.gold.is_(True))
        .order_by(Annotation.id)
    )
    if qualification is not None:
        stmt = stmt.where(GoldAnswer.qualification.is_(qualification))
    if user_id is not None:
        stmt = stmt.where(Annotation.user_id == user_id)
    if task_ids is not None:
        stmt = stmt.where(Annotation.task_id.in_(task_ids or [-1]))
    for task_id, user, kind, choice, chosen_id, ranking, ratings, answer in db.execute(stmt):
        right = is_correct(kind, answer, choice=choice, chosen_id=chosen_id, ranking=ranking, ratings=ratings)
        yield task_id, user, right


def gold_accuracy_by_annotator(session: Db) -> dict[int, GoldAccuracy]:
    """Per annotator (user id) with at least one answer to a mixed-in gold task: count, correct, accuracy and its
    Wilson 95% interval. Qualification answers are not counted (the annotator saw their explanations)."""
    tally: dict[int, list[int]] = {}
    for _task, user, right in _graded(session, qualification=False):
        counts = tally.setdefault(user, [0, 0])
        counts[0] += 1
        counts[1] += right
    return {user: accuracy_of(correct, count) for user, (count, correct) in sorted(tally.items())}


def gold_accuracy_by_username(session: Session) -> dict[str, dict[str, Any]]:
    """gold_accuracy_by_annotator keyed by username, as JSON (the stats page and `GET /api/v1/stats`)."""
    by_id = gold_accuracy_by_annotator(session)
    names = dict(session.execute(select(User.id, User.username).where(User.id.in_(list(by_id) or [-1]))).all())
    return {names[user]: accuracy.as_json() for user, accuracy in by_id.items()}


# ---- qualification ---------------------------------------------------------------------------------------------


def qualification_status(db: Db, *, user_id: int) -> str | None:
    return db.execute(select(QualificationResult.status).where(QualificationResult.user_id == user_id)).scalar()


def grade_qualification(db: Db, *, user_id: int, threshold: float, now: datetime | None = None) -> str | None:
    """Called when the annotator has no qualification task left: store and return passed or failed (skipped
    tasks count as wrong). None when there is no qualification set at all (nothing to pass)."""
    tasks = list(
        db.execute(
            select(GoldAnswer.task_id)
            .join(Task, Task.id == GoldAnswer.task_id)
            .where(GoldAnswer.qualification.is_(True), Task.gold.is_(True), Task.retired_at.is_(None))
        ).scalars()
    )
    if not tasks:
        return None
    right = {task for task, _user, ok in _graded(db, qualification=True, user_id=user_id, task_ids=tasks) if ok}
    correct, total = len(right), len(tasks)
    status = "passed" if correct >= threshold * total - 1e-9 else "failed"
    db.execute(
        insert(QualificationResult).values(
            user_id=user_id,
            status=status,
            correct=correct,
            total=total,
            threshold=threshold,
            decided_at=now or utcnow(),
            decided_by_id=None,
        )
    )
    return status


def failed_message(db: Db, *, user_id: int) -> str:
    correct, total, threshold = db.execute(
        select(QualificationResult.correct, QualificationResult.total, QualificationResult.threshold).where(
            QualificationResult.user_id == user_id
        )
    ).one()
    share = f" ({correct / total:.0%})" if total else ""
    return (
        f"You did not pass the qualification set: {correct} of {total} right{share}, {threshold:.0%} needed. "
        "You get no tasks until an admin resets your qualification (to try again) or allows you."
    )


@dataclass
class QualificationItem:
    task_id: int
    kind: str
    prompt: str
    responses: list[tuple[str, str]]  # (label as shown to this annotator, text)
    yours: str  # the annotator's answer in those labels ("skipped" when skipped)
    gold: str  # the right answer in those labels
    right: bool
    explanation: str | None


@dataclass
class QualificationReport:
    status: str  # in_progress | passed | failed | allowed | not_required
    correct: int
    total: int
    threshold: float | None
    remaining: int  # qualification tasks the annotator has not done yet
    items: list[QualificationItem]  # only once the set is graded (the explanations come with the result)


def _labelled(answer: dict[str, Any], kind: str, shown: list[int]) -> str:
    if kind == "pairwise":
        if answer.get("choice") == "chosen":
            return f"{label_of(shown, answer.get('chosen_id'))} better"
        return str(answer.get("choice") or "no choice").replace("_", " ")
    if kind == "ranking":
        return " > ".join(label_of(shown, g) for g in answer.get("ranking") or []) or "no ranking"
    rated = sorted((label_of(shown, g), v) for g, v in (answer.get("ratings") or {}).items())
    return ", ".join(f"{label} {v}" for label, v in rated) if rated else "no ratings"


def qualification_report(session: Session, *, user_id: int, threshold: float | None) -> QualificationReport:
    """What the annotator may see of their qualification: the result and, once graded, each task with their
    answer, the right one and its explanation. `threshold` None: qualification is not required."""
    result = session.get(QualificationResult, user_id)
    tasks = session.execute(
        select(Task.id, Task.kind, Prompt, GoldAnswer)
        .join(GoldAnswer, GoldAnswer.task_id == Task.id)
        .join(Prompt, Prompt.id == Task.prompt_id)
        .where(GoldAnswer.qualification.is_(True), Task.gold.is_(True), Task.retired_at.is_(None))
        .order_by(Task.id)
    ).all()
    assignments = {
        a.task_id: a
        for a in session.scalars(
            select(Assignment).where(
                Assignment.user_id == user_id, Assignment.task_id.in_([t[0] for t in tasks] or [-1])
            )
        )
    }
    remaining = sum(1 for t in tasks if t[0] not in assignments or assignments[t[0]].status == "leased")
    if result is None:
        status = "in_progress" if threshold is not None else "not_required"
        return QualificationReport(status, 0, len(tasks), threshold, remaining, [])
    annotations = {
        a.task_id: a
        for a in session.scalars(
            select(Annotation).where(
                Annotation.user_id == user_id,
                Annotation.source == "human",
                Annotation.deleted_at.is_(None),
                Annotation.task_id.in_([t[0] for t in tasks] or [-1]),
            )
        )
    }
    items = []
    for task_id, kind, prompt, gold in tasks:
        assignment = assignments.get(task_id)
        if assignment is None:
            continue  # added to the set after this annotator was graded
        shown = [int(g) for g in assignment.permutation]
        texts = dict(session.execute(select(Generation.id, Generation.text).where(Generation.id.in_(shown))).all())
        annotation = annotations.get(task_id)
        right = annotation is not None and is_correct(
            kind,
            gold.answer,
            choice=annotation.choice,
            chosen_id=annotation.chosen_id,
            ranking=annotation.ranking,
            ratings=annotation.ratings,
        )
        items.append(
            QualificationItem(
                task_id=task_id,
                kind=kind,
                prompt=prompt_text(prompt),
                responses=[(LABELS[i], texts.get(g, "")) for i, g in enumerate(shown)],
                yours=summary(annotation) if annotation is not None else "skipped",
                gold=_labelled(gold.answer, kind, shown),
                right=right,
                explanation=gold.explanation,
            )
        )
    return QualificationReport(result.status, result.correct, result.total, result.threshold, remaining, items)


@dataclass
class AnnotatorQualification:
    user_id: int
    username: str
    status: str | None  # None: not graded yet
    correct: int
    total: int
    decided_at: datetime | None


def qualification_overview(session: Session) -> list[AnnotatorQualification]:
    """Every active human annotator with their qualification result (for the admin page)."""
    rows = session.execute(
        select(User.id, User.username, QualificationResult)
        .outerjoin(QualificationResult, QualificationResult.user_id == User.id)
        .where(User.role == "annotator", User.is_ai.is_(False), User.is_active.is_(True))
        .order_by(User.username)
    ).all()
    return [
        AnnotatorQualification(
            user_id=uid,
            username=name,
            status=r.status if r else None,
            correct=r.correct if r else 0,
            total=r.total if r else 0,
            decided_at=r.decided_at if r else None,
        )
        for uid, name, r in rows
    ]


def _annotator(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} does not exist")
    return user


def reset_qualification(session: Session, *, user_id: int, now: datetime | None = None) -> None:
    """The annotator takes the qualification set again: the result goes, their qualification answers are undone
    (kept, soft-deleted) and those tasks are offered to them anew. Flushes."""
    _annotator(session, user_id)
    now = now or utcnow()
    tasks = select(GoldAnswer.task_id).where(GoldAnswer.qualification.is_(True))
    session.execute(delete(QualificationResult).where(QualificationResult.user_id == user_id))
    undone = session.execute(
        update(Annotation)
        .where(Annotation.user_id == user_id, Annotation.task_id.in_(tasks), Annotation.deleted_at.is_(None))
        .values(deleted_at=now)
        .returning(Annotation.task_id)
    ).scalars()
    undone_ids = set(undone)
    for task in session.scalars(select(Task).where(Task.id.in_(undone_ids or [-1]))):
        task.done_count = max(0, task.done_count - 1)
        task.completed = task.done_count >= task.overlap
    session.execute(delete(Assignment).where(Assignment.user_id == user_id, Assignment.task_id.in_(tasks)))
    session.flush()


def allow_annotator(session: Session, *, user_id: int, admin_id: int, threshold: float, now: datetime | None = None):
    """Let the annotator work real tasks without passing (their result, if any, is kept in the counts). Flushes."""
    _annotator(session, user_id)
    result = session.get(QualificationResult, user_id)
    if result is None:
        result = QualificationResult(user_id=user_id, correct=0, total=0, threshold=threshold)
        session.add(result)
    result.status, result.decided_by_id, result.decided_at = "allowed", admin_id, now or utcnow()
    session.flush()
    return result


def task_number(text: str) -> int:
    """A task id typed into a form."""
    value = text.strip()
    if not value.isdigit() or not 1 <= int(value) <= DB_INT_MAX:
        raise GoldInvalid(f"the task id must be a positive whole number, not {text!r}")
    return int(value)


def parse_answer_text(text: str) -> Any:
    """A gold answer typed into the admin form as JSON (the same object `PUT /api/v1/gold/{task_id}` takes)."""
    try:
        return json.loads(text)
    except ValueError as exc:  # not JSON, or an integer of more than 4300 digits
        raise GoldInvalid(f"the answer is not JSON: {exc}") from None


@dataclass
class GoldOverview:
    tasks: list[GoldTaskRow]
    annotators: list[AnnotatorQualification]
    accuracy: dict[str, dict[str, Any]]  # username -> gold_accuracy_by_annotator's figures


def gold_overview(session: Session) -> GoldOverview:
    """What the admin's gold page shows: gold tasks, annotators' qualification and their gold accuracy."""
    return GoldOverview(
        tasks=list_gold(session),
        annotators=qualification_overview(session),
        accuracy=gold_accuracy_by_username(session),
    )
