"""The data manager's queries: prompts, tasks and annotations, filtered and searched, one page at a time; a task
with its responses and every annotation; bulk re-queue and priority (retiring is app.services.retirement).

Paging is keyset on the id, newest first (`before` = the last id of the previous page): every page is one indexed
range scan that stops after PAGE_SIZE + 1 matching rows, as fast on page 2,000 as on page 1, whatever the table's
size. Filters a resource does not have are ignored (the page shows each resource's own).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import String, cast, exists, func, select, update
from sqlalchemy.orm import Session

from app.models import Annotation, Generation, Prompt, Task, TaskPosition, User
from app.services.errors import NotFound, ServiceError
from app.services.prompts import prompt_display_text
from app.services.retirement import parse_ids, retire_prompts, retire_tasks
from app.services.tasks import PRIORITY_MAX, PRIORITY_MIN
from domain.vocabulary import SOURCES, SPLITS, TASK_KINDS

RESOURCES = ("tasks", "prompts", "annotations")
TASK_STATES = ("open", "completed", "retired")
PROMPT_STATES = ("active", "retired")
ANNOTATION_STATES = ("live", "deleted")
STATES = {"tasks": TASK_STATES, "prompts": PROMPT_STATES, "annotations": ANNOTATION_STATES}
PAGE_SIZE = 50
ACTIONS = ("retire", "requeue", "priority")
MAX_SEARCH = 200


class DataFilterError(ServiceError):
    """A filter or an action the data manager refuses; the message is safe to show."""


@dataclass(frozen=True)
class DataFilters:
    resource: str = "tasks"
    kind: str = ""  # task kind (tasks, annotations)
    state: str = ""  # STATES[resource]
    split: str = ""  # the prompt's split
    tag: str = ""  # one of the prompt's tags
    annotator: str = ""  # username (tasks they annotated; their annotations)
    source: str = ""  # prompts: the import source; annotations and tasks: human | ai (an annotation of it)
    round: int | None = None  # the round (job id) whose samples made the task
    q: str = ""  # text in the prompt (and in critiques and rewrites, for annotations)

    def check(self) -> None:
        problems = []
        if self.resource not in RESOURCES:
            problems.append(f"resource must be one of {', '.join(RESOURCES)}")
        if self.kind and self.kind not in TASK_KINDS:
            problems.append(f"kind must be one of {', '.join(TASK_KINDS)}")
        if self.state and self.state not in STATES.get(self.resource, ()):
            problems.append(f"state must be one of {', '.join(STATES.get(self.resource, ()))}")
        if self.split and self.split not in SPLITS:
            problems.append(f"split must be one of {', '.join(SPLITS)}")
        if self.resource != "prompts" and self.source and self.source not in SOURCES:
            problems.append(f"source must be one of {', '.join(SOURCES)}")
        if len(self.q) > MAX_SEARCH:
            problems.append(f"the search text is longer than {MAX_SEARCH} characters")
        if problems:
            raise DataFilterError("; ".join(problems))

    def as_query(self) -> dict[str, str]:
        """The filters that are set, as URL query parameters (links and redirects keep them)."""
        values = {
            k: getattr(self, k) for k in ("resource", "kind", "state", "split", "tag", "annotator", "source", "q")
        }
        if self.round is not None:
            values["round"] = str(self.round)
        return {k: str(v) for k, v in values.items() if v not in ("", None)}


@dataclass
class DataPage:
    filters: DataFilters
    rows: list[dict[str, Any]]
    next_before: int | None  # `before` of the next page (None on the last)
    tags: list[str] = field(default_factory=list)


def _walked(session: Session, column, empty):
    """A filter column the page walks past rather than looks up. SQLite keeps no statistics, so it takes a
    low-selectivity index (split, completed, user) and sorts every matching row to find the newest 50: wrapped,
    no index on the column is used and the walk of the id index stops after 50 matches. PostgreSQL plans from
    statistics (a wrapped column would hide them): left as it is."""
    return func.coalesce(column, empty) if session.get_bind().dialect.name == "sqlite" else column


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _prompt_conditions(session: Session, f: DataFilters) -> list:
    conditions = []
    if f.split:
        conditions.append(_walked(session, Prompt.split, "") == f.split)
    if f.tag:
        # tags are a JSON list: its text holds the tag as a JSON string (the same on SQLite and PostgreSQL). A
        # position test, not LIKE: PostgreSQL guesses 0.5% of rows match a LIKE on an expression and then sorts
        # every match; for "position > 0" it guesses a third, and walks the id index as for the other filters.
        position = func.instr if session.get_bind().dialect.name == "sqlite" else func.strpos
        conditions.append(position(cast(Prompt.tags, String), json.dumps(f.tag)) > 0)
    if f.q:
        pattern = _like(f.q)
        conditions.append(
            Prompt.text.ilike(pattern, escape="\\") | cast(Prompt.messages, String).ilike(pattern, escape="\\")
        )
    return conditions


def _user_id(session: Session, username: str) -> int:
    user_id = session.scalar(select(User.id).where(User.username == username))
    if user_id is None:
        raise DataFilterError(f"no annotator {username!r}")
    return user_id


def _task_rows(session: Session, f: DataFilters, before: int | None, limit: int) -> list[dict[str, Any]]:
    stmt = select(Task, Prompt).join(Prompt, Prompt.id == Task.prompt_id).where(*_prompt_conditions(session, f))
    if f.kind:
        stmt = stmt.where(Task.kind == f.kind)
    completed = _walked(session, Task.completed, False)
    if f.state == "open":
        stmt = stmt.where(completed.is_(False), Task.retired_at.is_(None))
    elif f.state == "completed":
        stmt = stmt.where(completed.is_(True), Task.retired_at.is_(None))
    elif f.state == "retired":
        stmt = stmt.where(Task.retired_at.is_not(None))
    if f.round is not None:
        stmt = stmt.where(Task.job_id == f.round)
    if f.annotator or f.source:
        annotated = exists().where(Annotation.task_id == Task.id, Annotation.deleted_at.is_(None))
        if f.annotator:
            annotated = annotated.where(Annotation.user_id == _user_id(session, f.annotator))
        if f.source:
            annotated = annotated.where(Annotation.source == f.source)
        stmt = stmt.where(annotated)
    if before is not None:
        stmt = stmt.where(Task.id < before)
    rows = session.execute(stmt.order_by(Task.id.desc()).limit(limit)).all()
    return [
        {
            "id": task.id,
            "kind": task.kind,
            "prompt_id": prompt.id,
            "prompt": prompt_display_text(prompt),
            "split": prompt.split,
            "tags": prompt.tags or [],
            "done": task.done_count,
            "overlap": task.overlap,
            "priority": task.priority,
            "flag_reason": task.flag_reason,
            "state": "retired" if task.retired_at else "completed" if task.completed else "open",
            "round": task.job_id,
            "created_at": task.created_at,
        }
        for task, prompt in rows
    ]


def _prompt_rows(session: Session, f: DataFilters, before: int | None, limit: int) -> list[dict[str, Any]]:
    stmt = select(Prompt).where(*_prompt_conditions(session, f))
    if f.state == "active":
        stmt = stmt.where(Prompt.retired_at.is_(None))
    elif f.state == "retired":
        stmt = stmt.where(Prompt.retired_at.is_not(None))
    if f.source:
        stmt = stmt.where(Prompt.source == f.source)
    if f.round is not None:
        stmt = stmt.where(exists().where(Task.prompt_id == Prompt.id, Task.job_id == f.round))
    if before is not None:
        stmt = stmt.where(Prompt.id < before)
    prompts = session.scalars(stmt.order_by(Prompt.id.desc()).limit(limit)).all()
    counts = dict(
        session.execute(
            select(Task.prompt_id, func.count())
            .where(Task.prompt_id.in_([p.id for p in prompts]))
            .group_by(Task.prompt_id)
        ).all()
    )
    return [
        {
            "id": p.id,
            "prompt": prompt_display_text(p),
            "split": p.split,
            "tags": p.tags or [],
            "source": p.source,
            "tasks": counts.get(p.id, 0),
            "state": "retired" if p.retired_at else "active",
            "created_at": p.created_at,
        }
        for p in prompts
    ]


def _annotation_rows(session: Session, f: DataFilters, before: int | None, limit: int) -> list[dict[str, Any]]:
    stmt = (
        select(Annotation, Task.prompt_id, Prompt, User.username)
        .join(Task, Task.id == Annotation.task_id)
        .join(Prompt, Prompt.id == Task.prompt_id)
        .join(User, User.id == Annotation.user_id)
    )
    prompt_conditions = _prompt_conditions(session, DataFilters(split=f.split, tag=f.tag))
    stmt = stmt.where(*prompt_conditions)
    if f.q:
        pattern = _like(f.q)
        stmt = stmt.where(
            Prompt.text.ilike(pattern, escape="\\")
            | cast(Prompt.messages, String).ilike(pattern, escape="\\")
            | Annotation.critique.ilike(pattern, escape="\\")
            | Annotation.rewrite.ilike(pattern, escape="\\")
        )
    if f.kind:
        stmt = stmt.where(Annotation.kind == f.kind)
    if f.source:
        stmt = stmt.where(Annotation.source == f.source)
    if f.annotator:
        stmt = stmt.where(_walked(session, Annotation.user_id, 0) == _user_id(session, f.annotator))
    if f.state == "live":
        stmt = stmt.where(Annotation.deleted_at.is_(None))
    elif f.state == "deleted":
        stmt = stmt.where(Annotation.deleted_at.is_not(None))
    if f.round is not None:
        stmt = stmt.where(Task.job_id == f.round)
    if before is not None:
        stmt = stmt.where(Annotation.id < before)
    rows = session.execute(stmt.order_by(Annotation.id.desc()).limit(limit)).all()
    return [
        {
            "id": a.id,
            "task_id": a.task_id,
            "kind": a.kind,
            "annotator": username,
            "source": a.source,
            "prompt": prompt_display_text(prompt),
            "answer": describe_answer(a),
            "state": "deleted" if a.deleted_at else "live",
            "created_at": a.created_at,
        }
        for a, _prompt_id, prompt, username in rows
    ]


ROWS = {"tasks": _task_rows, "prompts": _prompt_rows, "annotations": _annotation_rows}


def browse(session: Session, filters: DataFilters, *, before: int | None = None, limit: int = PAGE_SIZE) -> DataPage:
    """One page of the filtered resource, newest first."""
    filters.check()
    rows = ROWS[filters.resource](session, filters, before, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return DataPage(filters, rows, rows[-1]["id"] if more and rows else None)


def describe_answer(a: Annotation) -> str:
    """An annotation's answer in a few words (generation ids: the task page shows their texts)."""
    if a.kind == "pairwise":
        if a.choice == "chosen":
            return f"chose #{a.chosen_id}" + (f" (strength {a.strength})" if a.strength else "")
        return a.choice or ""
    if a.kind == "ranking":
        return "ranked " + " > ".join(f"#{g}" for g in (a.ranking or []))
    return ", ".join(f"#{g} {v}" for g, v in sorted((a.ratings or {}).items()))


@dataclass
class TaskDetail:
    task: Task
    prompt: Prompt
    prompt_text: str
    responses: list[dict[str, Any]]
    annotations: list[dict[str, Any]]


def task_detail(session: Session, task_id: int) -> TaskDetail:
    """A task with its responses in canonical order and every annotation (undone ones too)."""
    task = session.get(Task, task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    prompt = session.get(Prompt, task.prompt_id)
    responses = [
        {
            "position": pos,
            "id": gen.id,
            "text": gen.text,
            "model_version_id": gen.model_version_id,
            "source": gen.source,
            "tokens": gen.num_tokens,
        }
        for pos, gen in session.execute(
            select(TaskPosition.position, Generation)
            .join(Generation, Generation.id == TaskPosition.generation_id)
            .where(TaskPosition.task_id == task_id)
            .order_by(TaskPosition.position)
        ).all()
    ]
    annotations = [
        {
            "id": a.id,
            "annotator": username,
            "source": a.source,
            "answer": describe_answer(a),
            "critique": a.critique,
            "critiques": a.critiques or {},
            "rewrite": a.rewrite,
            "flags": a.flags or [],
            "shown": a.positions,
            "time_spent_ms": a.time_spent_ms,
            "created_at": a.created_at,
            "deleted_at": a.deleted_at,
        }
        for a, username in session.execute(
            select(Annotation, User.username)
            .join(User, User.id == Annotation.user_id)
            .where(Annotation.task_id == task_id)
            .order_by(Annotation.id)
        ).all()
    ]
    return TaskDetail(task, prompt, prompt_display_text(prompt), responses, annotations)


def _existing_tasks(session: Session, ids: list[int]) -> None:
    found = set(session.scalars(select(Task.id).where(Task.id.in_(ids))))
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound(f"no task {', '.join(map(str, missing[:5]))}; nothing was changed")


def requeue_tasks(session: Session, *, ids: list[int]) -> int:
    """Offer the tasks again: un-retired, and a completed one asks for one more human judgment (its overlap becomes
    done + 1). Returns how many changed. Flushes, never commits."""
    if not ids:
        raise DataFilterError("select at least one task")
    _existing_tasks(session, ids)
    on_retired = session.scalars(
        select(Task.id)
        .join(Prompt, Prompt.id == Task.prompt_id)
        .where(Task.id.in_(ids), Prompt.retired_at.is_not(None))
    ).all()
    if on_retired:
        raise DataFilterError(f"task {', '.join(map(str, on_retired[:5]))}: its prompt is retired; nothing was changed")
    changed = session.execute(
        update(Task)
        .where(Task.id.in_(ids), (Task.retired_at.is_not(None)) | Task.completed.is_(True))
        .values(
            retired_at=None,
            overlap=func.max(Task.overlap, Task.done_count + 1)
            if session.get_bind().dialect.name == "sqlite"
            else func.greatest(Task.overlap, Task.done_count + 1),
            completed=False,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    session.expire_all()
    return changed


def set_priority(session: Session, *, ids: list[int], priority: int) -> int:
    """The tasks' priority (higher is offered first). Flushes, never commits."""
    if not ids:
        raise DataFilterError("select at least one task")
    low, high = PRIORITY_MIN, PRIORITY_MAX
    if not low <= priority <= high:
        raise DataFilterError(f"priority must be between {low} and {high}")
    _existing_tasks(session, ids)
    changed = session.execute(
        update(Task).where(Task.id.in_(ids)).values(priority=priority).execution_options(synchronize_session=False)
    ).rowcount
    session.expire_all()
    return changed


def bulk_action(session: Session, *, resource: str, action: str, ids: list[str], priority: str = "") -> str:
    """One bulk action of the page's form on the selected rows; returns the notice to show. Flushes, never
    commits; a refusal changes nothing."""
    if action not in ACTIONS:
        raise DataFilterError(f"action must be one of {', '.join(ACTIONS)}")
    if resource not in RESOURCES:
        raise DataFilterError(f"resource must be one of {', '.join(RESOURCES)}")
    if not ids:
        raise DataFilterError("select at least one row (the check boxes on the left)")
    selected = parse_ids(ids, what=resource[:-1])
    if resource == "prompts" and action == "retire":
        result = retire_prompts(session, ids=selected)
        return f"{result.retired} prompt(s) retired with {result.tasks_retired} task(s)"
    if resource != "tasks":
        raise DataFilterError(f"{action} applies to tasks{' and prompts' if action == 'retire' else ''}")
    if action == "retire":
        return f"{retire_tasks(session, ids=selected).retired} task(s) retired"
    if action == "requeue":
        return f"{requeue_tasks(session, ids=selected)} task(s) re-queued"
    if not priority.lstrip("-").isdigit():
        raise DataFilterError("priority must be a whole number")
    return f"priority {int(priority)} set on {set_priority(session, ids=selected, priority=int(priority))} task(s)"
